"""Smoke suite: takes any running lab, netns or vm, and checks it through labctl's own commands.

    LABCTL_SMOKE_TOPOLOGY=path/to/topology.yml [LABCTL_HOME=...] pytest tests/smoke

With no LABCTL_SMOKE_TOPOLOGY it uses the seed lab; a netns lab that is not up is brought up
for the run (and taken down after); a vm lab must already be up (`labctl up -t FILE`)."""

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = Path(os.environ.get("LABCTL_SMOKE_TOPOLOGY", ROOT / "inventories/seed/topology.yml"))


def labctl(*args, check=True):
    p = subprocess.run(
        [sys.executable, "-m", "labctl", *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ, NO_COLOR="1"),
        timeout=900,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"labctl {' '.join(map(str, args))}: {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def lab():
    from labctl.spec import topology

    t = topology.load(TOPOLOGY)
    running = labctl("list").stdout.split()
    brought_up = False
    if t.name not in running:
        if t.provider != "netns":
            pytest.skip(f"vm lab {t.name} is not up: run `labctl up -t {TOPOLOGY}` first")
        if os.geteuid() != 0:
            pytest.skip("bringing up a netns lab needs root")
        labctl("up", "-t", TOPOLOGY)
        brought_up = True
    try:
        yield t
    finally:
        if brought_up:
            labctl("down", "-t", TOPOLOGY, check=False)


@pytest.fixture(scope="module")
def rows(lab):
    return {r["name"]: r for r in json.loads(labctl("inspect", "--name", lab.name, "--format", "json").stdout)}


@pytest.fixture(scope="module")
def checks(lab):
    p = labctl("verify", "--name", lab.name, "--format", "json", "--wait", "30", check=False)
    return p.returncode, json.loads(p.stdout)


def test_every_node_is_running_with_its_address(lab, rows):
    assert set(rows) == set(lab.nodes)
    for name, node in lab.nodes.items():
        r = rows[name]
        assert r["state"] == "running", r
        assert r["physical_ip"].split("/")[0] == str(node.address)
        assert r["hostname"] == name


def test_tunnel_ip_lies_in_the_nodes_block(lab, rows):
    if lab.calico.encapsulation == "None":
        pytest.skip("no tunnel device with encapsulation None")
    for r in rows.values():
        assert r["tunnel_device"] in ("tunl0", "vxlan.calico")
        assert ipaddress.ip_address(r["tunnel_ip"]) in ipaddress.ip_network(r["block"])
        assert ipaddress.ip_network(r["block"]).subnet_of(lab.pool)


def test_bgp_mesh_is_complete(rows):
    for r in rows.values():
        assert r["bgp"]["established"] == r["bgp"]["expected"] == len(rows) - 1, r["bgp"]


def test_labels_are_as_declared(lab, rows):
    for name, node in lab.nodes.items():
        for k, v in node.labels.items():
            assert rows[name]["labels"].get(k) == v


def test_verify_passes_with_cross_node_pings(checks):
    rc, res = checks
    assert rc == 0, [c for c in res if not c["ok"]]
    pings = [c for c in res if c["check"] == "ping"]
    assert pings and all(c["ok"] for c in pings)
