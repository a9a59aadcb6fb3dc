"""labctl init (generated topologies), route reflectors live, and labctl ssh."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, host_snapshot, labctl, residue
from labctl.spec import schedule, topology

RR = ROOT / "inventories/route-reflectors/topology.yml"


@pytest.mark.unit
@pytest.mark.parametrize("nodes, reflectors", [(3, 0), (5, 2), (300, 2), (1000, 3)])
def test_init_writes_a_valid_topology(tmp_path, nodes, reflectors):
    out = tmp_path / "t.yml"
    p = labctl("init", "--nodes", nodes, "--route-reflectors", reflectors, "--name", "gen", "-o", out)
    assert p.returncode == 0, p.stderr
    t = topology.load(out)
    assert len(t.nodes) == nodes and t.calico.route_reflectors == list(t.nodes)[:reflectors]
    assert len({str(n.address) for n in t.nodes.values()}) == nodes
    plan = schedule.plan(t)
    assert len({str(n.block) for n in plan.nodes}) == nodes


@pytest.mark.unit
def test_init_refuses_more_reflectors_than_nodes():
    p = labctl("init", "--nodes", 2, "--route-reflectors", 3)
    assert p.returncode == 2 and "more than --nodes" in p.stderr


@pytest.mark.unit
def test_rr_render_peers_clients_only_with_reflectors(tmp_path):
    from labctl.outputs import render
    from labctl.plan import layout

    t = topology.load(RR)
    data = render.build(schedule.plan(t), layout.LabDir(tmp_path)).to_data()
    peers = {n["name"]: {p["name"]: p["type"] for p in n["peers"]} for n in data["nodes"]}
    assert peers["k8s-worker-3"] == {"k8s-master": "rr", "k8s-worker-1": "rr"}
    assert peers["k8s-master"] == {
        "k8s-worker-1": "rr",
        "k8s-worker-2": "rr-client",
        "k8s-worker-3": "rr-client",
        "k8s-worker-4": "rr-client",
    }


@pytest.mark.unit
def test_rr_problems_are_reported():
    d = yaml.safe_load(RR.read_text())
    d["calico"]["route_reflectors"] = ["k8s-master", "nope", "k8s-master"]
    d["calico"]["rr_cluster_id"] = "x"
    with pytest.raises(Exception) as e:
        topology.loads(yaml.safe_dump(d), "rr.yml")
    text = str(e.value)
    assert "route_reflectors[1]: 'nope' is not a node" in text
    assert "route_reflectors[2]: 'k8s-master' is listed twice" in text
    assert "rr_cluster_id" in text


@pytest.mark.netns
def test_route_reflectors_live_and_ssh(labhome):
    before = host_snapshot(labhome)
    try:
        up = labctl("up", "-t", RR, home=labhome)
        assert up.returncode == 0, up.stderr
        rows = {r["name"]: r for r in json.loads(labctl("inspect", "-f", "json", home=labhome, check=True).stdout)}
        assert rows["k8s-master"]["bgp"]["established"] == rows["k8s-master"]["bgp"]["expected"] == 4
        assert rows["k8s-worker-3"]["bgp"]["established"] == rows["k8s-worker-3"]["bgp"]["expected"] == 2
        v = labctl("verify", home=labhome, timeout=120)
        assert v.returncode == 0, v.stdout
        # a client learns every block through a reflector, with the owner as next hop
        bgp = json.loads(labctl("bgp", "k8s-worker-3", "-f", "json", home=labhome, check=True).stdout)[0]
        learned = {r["prefix"]: r["next_hop"] for r in bgp["routes"]}
        assert learned["192.168.4.0/24"] == "10.14.22.5"  # k8s-worker-4's block, via a reflector
        assert {s["type"] for s in bgp["sessions"]} == {"rr"}
        # labctl ssh: an interactive session; without a terminal it reads commands from stdin
        p = subprocess.run(
            [sys.executable, "-m", "labctl", "ssh", "k8s-worker-2"],
            input="hostname\n",
            text=True,
            capture_output=True,
            env=dict(os.environ, LABCTL_HOME=str(labhome)),
            timeout=30,
        )
        assert p.returncode == 0 and "k8s-worker-2" in p.stdout, p.stderr
    finally:
        start = time.monotonic()
        labctl("down", "-t", RR, home=labhome)
        assert time.monotonic() - start < 30
    assert residue(before, host_snapshot(labhome)) == {}


@pytest.mark.unit
def test_route_devs_batch_answers_like_one_ip_per_address():
    """sshmux checks every node's route with one `ip -batch`: the same devices as one `ip route get`
    each, and an address ip cannot answer does not spoil the others."""
    from labctl.live import access

    addrs = ["127.0.0.1", "192.0.2.77", "not-an-address", "10.255.255.1"]
    batch = access.route_devs(addrs)
    assert batch == {a: access.route_devs([a])[a] for a in addrs}
    assert batch["127.0.0.1"] == "lo" and batch["not-an-address"] is None


@pytest.mark.unit
def test_host_key_made_in_process_is_one_ssh_keygen_reads(tmp_path):
    """netns nodes' host keys come from cryptography, not ssh-keygen: sshd must load them as its own."""
    from labctl.providers.base import host_key_pair

    key = tmp_path / "ssh_host_ed25519_key"
    host_key_pair(key, "node-1")
    assert key.stat().st_mode & 0o777 == 0o600
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    pub = (tmp_path / "ssh_host_ed25519_key.pub").read_text()
    assert pub.split()[:2] == derived.stdout.split()[:2] and pub.split()[0] == "ssh-ed25519"
    assert pub.endswith(" node-1\n")
