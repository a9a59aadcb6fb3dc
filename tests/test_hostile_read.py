"""Issue 15 (items 5, 9-12) on a real netns lab: stale node names, a deleted BGP route, an
unreachable node, a missing VTEP neighbour or pod route, and where the read commands say so.
One lab, "lcread" on 10.163.0.0/16 (no other test uses it); each test breaks one thing and leaves
the lab repaired by `up`."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import labctl, real_lab, renumbered, write_yaml

pytestmark = pytest.mark.netns

NAME, OCTET = "lcread", 163


def topo(tmp_path: Path, extra_worker: bool = False) -> Path:
    d = renumbered(NAME, OCTET)
    if extra_worker:
        d["nodes"]["k8s-worker-3"] = {"role": "worker", "address": f"10.{OCTET}.22.4", "labels": {"worker": "no-3"}}
    return write_yaml(tmp_path / ("grown.yml" if extra_worker else "base.yml"), d)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lcread")
    with real_lab(topo(tmp)) as r:
        data = json.loads((r.home / NAME / "topology-data.json").read_text())
        yield {"home": r.home, "t": r.topology, "tmp": tmp, "data": data}


def ns(node: str) -> str:
    return f"lc-{NAME}.{node}"


def verify(lab, *args):
    p = labctl("verify", "--name", NAME, "--format", "json", "--wait", "0", *args, home=lab["home"], timeout=120)
    return p.returncode, json.loads(p.stdout)


def failing(res):
    return {(c["check"], c["target"]): c["detail"] for c in res if not c["ok"] and not c.get("skipped")}


def up(lab, t=None):
    p = labctl("up", "-t", t or lab["t"], home=lab["home"])
    assert p.returncode == 0, p.stderr
    return json.loads((lab["home"] / NAME / "state.json").read_text())


def node(lab, name):
    return next(n for n in lab["data"]["nodes"] if n["name"] == name)


def test_a_deleted_bgp_route_is_back_when_up_returns(lab):
    """Item 9: BIRD would put it back only at its next kernel scan (60 s); `up` must do it now."""
    block = node(lab, "k8s-master")["block"]
    subprocess.run(["ip", "-n", ns("k8s-worker-1"), "route", "del", block], check=True)
    rc, res = verify(lab)
    assert rc == 1 and f"no route to {block}" in failing(res)[("routes", "k8s-worker-1")]
    st = up(lab)
    assert st["changed"].get("k8s-worker-1", 0) >= 1
    rc, res = verify(lab)
    assert rc == 0, failing(res)
    # nothing missing now: a second up changes nothing
    assert up(lab)["changed"] == {}


def test_a_stale_hosts_file_is_named_by_verify_and_rewritten_by_up(lab):
    """Item 5: from each node, every other node's name resolves to its address."""
    hosts = lab["home"] / NAME / "nodes" / "k8s-worker-1" / "hosts"
    good = hosts.read_text()
    with hosts.open("r+") as f:  # in place: the node sees this file through a bind mount
        text = good.replace(f"10.{OCTET}.22.3 k8s-worker-2", f"10.{OCTET}.22.99 k8s-worker-2")
        assert text != good
        f.seek(0)
        f.write(text)
        f.truncate()
    rc, res = verify(lab)
    bad = failing(res)
    assert rc == 1 and list(bad) == [("names", "k8s-worker-1")], bad
    assert f"k8s-worker-2 resolves to 10.{OCTET}.22.99, not 10.{OCTET}.22.3" in bad[("names", "k8s-worker-1")]
    up(lab)
    assert hosts.read_text() == good
    assert verify(lab)[0] == 0


def test_old_nodes_resolve_a_node_added_later(lab):
    """Item 5: reconcile adds k8s-worker-3; the nodes built before it learn its name."""
    grown = topo(lab["tmp"], extra_worker=True)
    up(lab, grown)
    try:
        for old in ("k8s-master", "k8s-worker-1", "k8s-worker-2"):
            p = labctl("exec", "--name", NAME, old, "--", "getent", "hosts", "k8s-worker-3", home=lab["home"])
            assert p.returncode == 0 and p.stdout.split()[0] == f"10.{OCTET}.22.4", (old, p.stdout, p.stderr)
        rc, res = verify(lab)
        assert rc == 0, failing(res)
        assert sum(c["check"] == "names" and c["ok"] for c in res) == 4
    finally:
        up(lab)  # back to three nodes


def test_missing_vtep_neighbour_and_pod_route_are_named(lab):
    """Item 11: verify and trace say which entry is missing, not just "no reply" / "lladdr ?"."""
    w2 = node(lab, "k8s-worker-2")
    pod_b = next(w for w in lab["data"]["workloads"] if w["name"] == "pod-b")
    subprocess.run(["ip", "-n", ns("k8s-worker-1"), "neigh", "del", w2["tunnel_ip"], "dev", "vxlan.calico"], check=True)
    subprocess.run(["ip", "-n", ns("k8s-worker-2"), "route", "del", f"{pod_b['ip']}/32"], check=True)
    try:
        rc, res = verify(lab)
        bad = failing(res)
        assert rc == 1
        assert f"no neighbour entry for {w2['tunnel_ip']} on vxlan.calico" in bad[("vtep", "k8s-worker-1")], bad
        assert bad[("pod-route", "pod-b")] == f"no /32 route for pod-b {pod_b['ip']} on k8s-worker-2"
        tr = labctl("trace", "--name", NAME, "pod-a", "pod-b", home=lab["home"], timeout=60)
        assert tr.returncode == 1
        assert "lladdr ?" not in tr.stdout
        assert f"k8s-worker-1: no neighbour entry for {w2['tunnel_ip']} on vxlan.calico" in tr.stdout, tr.stdout
    finally:
        up(lab)
    assert verify(lab)[0] == 0


def test_an_unreachable_node_is_said_once_and_its_checks_are_not_run(lab):
    """Items 10 and 12: one "unreachable" line, the rest not run; inspect `?`; bgp and graph errors on stderr."""
    home = lab["home"]
    pid = int((home / NAME / "nodes" / "k8s-worker-2" / "sshd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        p = labctl("verify", "--name", NAME, "--wait", "0", home=home, timeout=120)
        assert p.returncode == 1
        rows = [line.split(None, 3) for line in p.stdout.splitlines()[1:] if line.strip() and "passed," not in line]
        failed = [r for r in rows if r[2] == "FAIL"]
        assert [(r[0], r[1]) for r in failed] == [("ssh", "k8s-worker-2")], p.stdout
        assert "unreachable" in failed[0][3]
        skipped = {(r[0], r[1]) for r in rows if r[2] == "SKIP"}
        assert {("bgp", "k8s-worker-2"), ("routes", "k8s-worker-2"), ("labels", "k8s-worker-2")} <= skipped
        assert ("placement", "pod-b") in skipped and ("pod-route", "pod-b") in skipped
        assert all(r[3] == "not run: k8s-worker-2 unreachable" for r in rows if r[2] == "SKIP")
        assert "node lacks" not in p.stdout and "no reply" not in p.stdout  # pod-a -> pod-b still pings

        js = json.loads(labctl("inspect", "--name", NAME, "-f", "json", home=home).stdout)
        w2 = next(r for r in js if r["name"] == "k8s-worker-2")
        assert w2["state"] == "unreachable" and w2["bgp"]["established"] is None and w2["labels"] is None
        table = labctl("inspect", "--name", NAME, home=home).stdout
        line = next(x for x in table.splitlines() if x.startswith("k8s-worker-2"))
        assert line.split()[-1] == "?/2" and "0/2" not in line

        b = labctl("bgp", "--name", NAME, home=home, timeout=60)
        assert b.returncode == 1
        assert "ssh k8s-worker-2" not in b.stdout and "Established" in b.stdout
        assert "ssh k8s-worker-2" in b.stderr

        g = labctl("graph", "--name", NAME, home=home, timeout=60)
        assert g.returncode == 1 and "k8s-master" in g.stdout
        assert "k8s-worker-2" in g.stderr and len(g.stderr.strip().splitlines()) == 1
    finally:
        up(lab)  # bootstrap restarts the dead sshd
    assert verify(lab)[0] == 0
