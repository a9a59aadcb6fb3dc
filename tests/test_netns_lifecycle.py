"""Reconcile, faults and repair, host safety, secrets, and two labs side by side, on real namespaces."""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import SEED, host_snapshot, labctl, residue

pytestmark = pytest.mark.netns


def seedlike(tmp_path: Path, name: str, octet: int, extra_worker: bool = False, **labels) -> Path:
    d = yaml.safe_load(SEED.read_text())
    d["name"] = name
    d["network"] = {"lan": f"10.{octet}.0.0/16"}
    for i, node in enumerate(d["nodes"].values()):
        node["address"] = f"10.{octet}.22.{i + 1}"
    if extra_worker:
        d["nodes"]["k8s-worker-3"] = {"role": "worker", "address": f"10.{octet}.22.4", "labels": {"worker": "no-3"}}
        d["workloads"].append({"name": "pod-c", "node_selector": {"worker": "no-3"}})
    for node, value in labels.items():
        d["nodes"][node.replace("_", "-")]["labels"] = {"worker": value}
        d["workloads"] = [
            w
            if w["node_selector"].get("worker") != f"no-{node[-1]}"
            else {"name": w["name"], "node_selector": {"worker": value}}
            for w in d["workloads"]
        ]
    p = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.yml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


@pytest.fixture
def env(tmp_path, labhome):
    before = host_snapshot(labhome)
    topologies = []
    yield labhome, before, topologies
    for t in topologies:
        labctl("down", "-t", t, home=labhome)


def checks(home, name):
    p = labctl("verify", "--name", name, "--format", "json", home=home, timeout=120)
    return p.returncode, json.loads(p.stdout)


def test_reconcile_add_relabel_remove(env, tmp_path):
    home, before, tops = env
    base = seedlike(tmp_path, "lcrec", 81)
    tops.append(base)
    assert labctl("up", "-t", base, home=home).returncode == 0

    grown = seedlike(tmp_path, "lcrec", 81, extra_worker=True)
    state_before = (home / "lcrec" / "state.json").read_text()
    dry = labctl("up", "-t", grown, "--dry-run", home=home)
    assert dry.returncode == 0
    assert "+ node k8s-worker-3" in dry.stdout and "+ workload pod-c" in dry.stdout
    assert (home / "lcrec" / "state.json").read_text() == state_before  # dry run touched nothing
    assert not Path("/run/netns/lc-lcrec.k8s-worker-3").exists()

    up = labctl("up", "-t", grown, home=home)
    assert up.returncode == 0, up.stderr
    # the new worker got its pod and labels; nobody else's pods or labels were touched
    changed = re.findall(r"TASK (.+)\n((?:    .+\n)+)", up.stderr)
    per_task = {task: re.findall(r"^\s+(\S+)\s+(changed|ok|skipped)", block, re.M) for task, block in changed}
    assert {h for h, s in per_task["Pods on Calico-style veths"]} == {"k8s-worker-3"}
    assert {h for h, s in per_task["Node labels"]} == {"k8s-worker-3"}
    rc, res = checks(home, "lcrec")
    assert rc == 0, res
    assert sum(c["check"] == "bgp" and c["detail"].startswith("3/3") for c in res) == 4

    relabelled = seedlike(tmp_path, "lcrec", 81, extra_worker=True, k8s_worker_1="no-9")
    up = labctl("up", "-t", relabelled, home=home)
    assert up.returncode == 0, up.stderr
    assert re.search(r"network\s+\(skipped\)", up.stderr) and re.search(r"labels\s+k8s-worker-1\n", up.stderr)
    rc, res = checks(home, "lcrec")
    assert rc == 0
    assert {"check": "labels", "target": "k8s-worker-1", "ok": True, "detail": "worker=no-9"} in res

    shrunk = yaml.safe_load(relabelled.read_text())
    del shrunk["nodes"]["k8s-worker-3"]
    shrunk["workloads"] = [w for w in shrunk["workloads"] if w["name"] != "pod-c"]
    small = tmp_path / "small.yml"
    small.write_text(yaml.safe_dump(shrunk, sort_keys=False))
    up = labctl("up", "-t", small, home=home)
    assert up.returncode == 0, up.stderr
    assert not Path("/run/netns/lc-lcrec.k8s-worker-3").exists()
    assert not Path("/run/netns/lc-lcrec.k8s-worker-3.pod-c").exists()
    rc, res = checks(home, "lcrec")
    assert rc == 0 and all(c["target"] != "k8s-worker-3" for c in res)
    fdb = labctl(
        "exec", "--name", "lcrec", "k8s-master", "--", "bridge", "fdb", "show", "dev", "vxlan.calico", home=home
    )
    assert "10.81.22.4" not in fdb.stdout and fdb.stdout.count(" dst ") == 2

    assert labctl("down", home=home).returncode == 0
    assert residue(before, host_snapshot(home)) == {}


def _fails_within(home, name, seconds, check, target):
    start = time.monotonic()
    rc, res = checks(home, name)
    took = time.monotonic() - start
    bad = [(c["check"], c["target"]) for c in res if not c["ok"]]
    assert rc == 1 and (check, target) in bad, res
    assert took < seconds, took


def test_faults_are_seen_by_verify_and_repaired_by_up(env, tmp_path):
    home, before, tops = env
    t = seedlike(tmp_path, "lcfault", 84)
    tops.append(t)
    assert labctl("up", "-t", t, home=home).returncode == 0
    nodes = home / "lcfault" / "nodes"

    pid = int((nodes / "k8s-worker-1" / "bird.pid").read_text())
    os.kill(pid, 9)
    _fails_within(home, "lcfault", 10, "bgp", "k8s-worker-1")
    assert labctl("up", "-t", t, home=home).returncode == 0
    assert checks(home, "lcfault")[0] == 0

    subprocess.run(["ip", "-n", "lc-lcfault.k8s-worker-2", "link", "set", "ens192", "down"], check=True)
    _fails_within(home, "lcfault", 10, "ssh", "k8s-worker-2")
    assert labctl("up", "-t", t, home=home).returncode == 0
    assert checks(home, "lcfault")[0] == 0

    (nodes / "k8s-worker-1" / "labels.json").write_text("{}\n")
    _fails_within(home, "lcfault", 10, "labels", "k8s-worker-1")
    up = labctl("up", "-t", t, home=home)
    assert up.returncode == 0
    assert checks(home, "lcfault")[0] == 0

    assert labctl("down", home=home).returncode == 0
    assert residue(before, host_snapshot(home)) == {}


def _host_net():
    fwd = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    nat = (
        subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
        if subprocess.run(["which", "iptables-save"], capture_output=True).returncode == 0
        else ""
    )
    default = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout
    return fwd, [x for x in nat.splitlines() if not x.startswith("#")], default


def test_host_safety_two_labs_and_secrets(env, tmp_path):
    home, before, tops = env
    net_before = _host_net()
    a, b = seedlike(tmp_path, "lcsafea", 85), seedlike(tmp_path, "lcsafeb", 86)
    tops += [a, b]
    assert labctl("up", "-t", a, home=home).returncode == 0
    assert labctl("up", "-t", b, home=home).returncode == 0
    assert checks(home, "lcsafea")[0] == 0 and checks(home, "lcsafeb")[0] == 0
    # forwarding off, no NAT, the default route untouched; the lab only adds its own bridge route
    assert _host_net() == net_before
    assert net_before[0] == "0"
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    lab_routes = [r for r in routes.splitlines() if "10.85." in r or "10.86." in r or "192.168." in r]
    assert len(lab_routes) == 2 and all("br-lc" in r and "proto kernel" in r for r in lab_routes), lab_routes

    # a third lab on lab A's LAN overlaps a host route (A's bridge): refused, nothing created
    clash = seedlike(tmp_path, "lcsafec", 85)
    snap = host_snapshot(home)
    p = labctl("up", "-t", clash, home=home)
    assert p.returncode == 1 and "overlaps the host route 10.85.0.0/16" in p.stderr
    assert not (home / "lcsafec").exists()
    assert host_snapshot(home)["netns"] == snap["netns"] and host_snapshot(home)["links"] == snap["links"]

    # secrets: 0700 lab dir, 0600 keys, and no private key material in any log or artifact
    lab = home / "lcsafea"
    assert lab.stat().st_mode & 0o777 == 0o700
    key = lab / "ssh" / "id_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    secret_lines = [x for x in key.read_text().splitlines() if x and not x.startswith("-----")]
    host_keys = list((lab / "nodes").glob("*/ssh_host_ed25519_key"))
    assert all(k.stat().st_mode & 0o777 == 0o600 for k in host_keys)
    secret_lines += [x for k in host_keys for x in k.read_text().splitlines() if x and not x.startswith("-----")]
    keyfiles = {key, *host_keys}
    for f in lab.rglob("*"):
        if f.is_file() and f not in keyfiles and not f.is_socket():
            text = f.read_text(errors="ignore")
            assert not any(s in text for s in secret_lines), f"private key material in {f}"
            assert "PRIVATE KEY" not in text, f

    # labs are independent: taking A down leaves B working
    assert labctl("down", "--name", "lcsafea", home=home).returncode == 0
    assert checks(home, "lcsafeb")[0] == 0
    assert labctl("down", "--name", "lcsafeb", home=home).returncode == 0
    assert residue(before, host_snapshot(home)) == {}


def test_a_mesh_the_hosts_arp_table_cannot_hold_is_refused_before_anything_is_created(env, tmp_path):
    from labctl.providers import netns

    home, before, _ = env
    limit = int(netns.GC_THRESH3.read_text())
    nodes = int(limit**0.5) + 2  # n(n-1) session ends + 2n > limit
    if nodes > 2000:
        pytest.skip(f"this host's gc_thresh3 ({limit}) fits any mesh labctl init writes")
    t = tmp_path / "mesh.yml"
    assert labctl("init", "--nodes", nodes, "-n", "lcarp", "-o", t).returncode == 0
    p = labctl("up", "-t", t, home=home)
    assert p.returncode == 1, p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert f"needs about {nodes * (nodes - 1) + 2 * nodes} ARP entries" in line
    assert f"gc_thresh3 = {limit}" in line and "--route-reflectors 2" in line
    assert residue(before, host_snapshot(home)) == {}
    assert not (home / "lcarp").exists()  # nothing built, no lab dir left


def test_neighbour_need_counts_session_ends_and_ssh():
    from labctl import generate, render, topology
    from labctl.layout import LabDir
    from labctl.providers import netns

    def need(text: str) -> int:
        plan = topology.plan(topology.loads(text))
        return netns.neighbour_need(render.topology_data(plan, render.context(plan, LabDir(Path("/x")))))

    assert need(SEED.read_text()) == 3 * 2 + 2 * 3
    assert need(generate.topology(50)) == 50 * 49 + 100
    assert need(generate.topology(100, reflectors=2)) == 2 * 99 + 98 * 2 + 200


def test_over_the_soft_arp_limit_warns_over_the_hard_one_refuses(tmp_path, monkeypatch):
    from labctl import generate, render, topology
    from labctl.errors import HostError
    from labctl.layout import LabDir
    from labctl.providers import netns

    (tmp_path / "gc_thresh2").write_text("512\n")
    (tmp_path / "gc_thresh3").write_text("1024\n")
    monkeypatch.setattr(netns, "GC_THRESH3", tmp_path / "gc_thresh3")
    prov = netns.NetnsProvider.__new__(netns.NetnsProvider)

    def data(text: str) -> dict:
        plan = topology.plan(topology.loads(text))
        return render.topology_data(plan, render.context(plan, LabDir(Path("/x"))))

    assert prov.check_neighbours(data(SEED.read_text())) == []
    (warning,) = prov.check_neighbours(data(generate.topology(100, reflectors=2)))
    assert "needs about 594 ARP entries, over the host's gc_thresh2 (512)" in warning
    assert "gc_thresh2=1188" in warning
    with pytest.raises(HostError) as e:
        prov.check_neighbours(data(generate.topology(40)))
    assert "needs about 1640 ARP entries" in str(e.value) and "gc_thresh3=6560" in e.value.hint
