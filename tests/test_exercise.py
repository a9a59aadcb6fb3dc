"""Issue 14 items 3-5 on a real netns lab: topology impairments, `labctl fail`/`repair`, and the
sample exercise's `checks:` (inventories/exercise-rr). One lab, "exrr" on 10.151.0.0/16 (no other
test uses it), built from the sample; every test leaves it repaired."""

import json
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, labctl, real_lab, renumbered, write_yaml
from labctl.live import impair

pytestmark = pytest.mark.netns

NAME, OCTET = "exrr", 151
SAMPLE = ROOT / "inventories" / "exercise-rr" / "topology.yml"
CHECKS = [
    "master-reflects-for-all",
    "worker-2-has-both-reflectors",
    "worker-2-routes-to-worker-3",
    "worker-2-routes-to-master",
    "pod-b-reaches-pod-c",
    "pod-b-reaches-pod-m",
    "lan-worker-2-to-master",
    "worker-3-learned-worker-2-over-bgp",
]


def topo(tmp: Path, fname: str = "base.yml", **extra) -> Path:
    return write_yaml(tmp / fname, renumbered(NAME, OCTET, SAMPLE) | extra)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exrr")
    with real_lab(topo(tmp)) as r:
        yield {"home": r.home, "t": r.topology, "tmp": tmp}


def run(lab, *args, timeout=120):
    return labctl(*args, "--name", NAME, home=lab["home"], timeout=timeout)


def verify(lab, *args, wait="0"):
    p = run(lab, "verify", "--format", "json", "--wait", wait, *args)
    return p.returncode, json.loads(p.stdout)


def failing(res):
    return {c["target"]: c["detail"] for c in res if not c["ok"] and not c.get("skipped")}


def up(lab, t=None):
    p = labctl("up", "-t", t or lab["t"], home=lab["home"])
    assert p.returncode == 0, p.stderr
    return json.loads((lab["home"] / NAME / "state.json").read_text())


def inspect(lab):
    p = run(lab, "inspect", "--format", "json")
    return {r["name"]: r for r in json.loads(p.stdout)}


def test_the_sample_exercise_passes(lab):
    rc, res = verify(lab, wait="5")
    assert rc == 0, failing(res)
    assert [c["target"] for c in res if c["check"] == "check"] == CHECKS
    rc, only = verify(lab, "--only", "checks")
    assert rc == 0 and [c["target"] for c in only] == CHECKS
    rc, builtin = verify(lab, "--only", "builtin")
    assert rc == 0 and not [c for c in builtin if c["check"] == "check"]
    table = run(lab, "verify", "--only", "checks", "--wait", "0")
    assert "pod-b-reaches-pod-c" in table.stdout and "8 passed, 0 failed" in table.stdout


def test_killing_bird_on_a_reflector_fails_exactly_the_expected_checks(lab):
    """The README walkthrough: k8s-worker-1 still reflects, so only what needs k8s-master fails."""
    p = run(lab, "fail", "k8s-master", "bird")
    assert p.returncode == 0, p.stderr
    try:
        rc, res = verify(lab, "--only", "checks")
        bad = failing(res)
        assert rc == 1
        assert set(bad) == {
            "master-reflects-for-all",
            "worker-2-has-both-reflectors",
            "worker-2-routes-to-master",
            "pod-b-reaches-pod-m",
        }, bad
        assert "BIRD not running" in bad["master-reflects-for-all"]
        assert "1 Established, want 2" in bad["worker-2-has-both-reflectors"]
        assert inspect(lab)["k8s-master"]["fault"] == "bird"
        # failing again is no change, and says so
        again = run(lab, "fail", "k8s-master", "bird")
        assert again.returncode == 0 and "already failed" in again.stdout
    finally:
        p = run(lab, "repair", "k8s-master")
    assert p.returncode == 0 and "bird repaired" in p.stdout, p.stderr
    rc, res = verify(lab, "--only", "checks", wait="10")
    assert rc == 0, failing(res)
    assert inspect(lab)["k8s-master"]["fault"] == ""


def test_a_killed_bird_shows_in_bgp_and_verify_and_up_repairs_it(lab):
    """Item 4: the reflector's session to k8s-worker-2 goes down and worker-2's block is withdrawn."""
    data = json.loads((lab["home"] / NAME / "topology-data.json").read_text())
    w2 = next(n for n in data["nodes"] if n["name"] == "k8s-worker-2")
    pid = int((Path(w2["dir"]) / "bird.pid").read_text())
    assert run(lab, "fail", "k8s-worker-2", "bird").returncode == 0
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    bgp = run(lab, "bgp", "k8s-master", "--format", "json")
    row = json.loads(bgp.stdout)[0]
    session = next(s for s in row["sessions"] if s["peer_node"] == "k8s-worker-2")
    assert "Established" not in (session["info"] or ""), session
    assert w2["block"] not in {r["prefix"] for r in row["routes"]}
    assert {r["prefix"] for r in row["routes"]}, "the other blocks stay"
    rc, res = verify(lab, "--only", "builtin")
    bad = {(c["check"], c["target"]) for c in res if not c["ok"]}
    assert rc == 1 and ("bgp", "k8s-worker-2") in bad and ("bgp", "k8s-master") in bad, bad
    st = up(lab)  # up repairs, as it repairs any drift
    assert not st.get("faults")
    rc, res = verify(lab, wait="10")
    assert rc == 0, failing(res)


def test_link_and_node_faults_and_their_repair(lab):
    ns = f"lc-{NAME}.k8s-worker-3"
    assert run(lab, "fail", "k8s-worker-3", "link").returncode == 0
    try:
        link = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "ens192"], capture_output=True, text=True)
        assert "UP" not in json.loads(link.stdout)[0]["flags"]
        assert inspect(lab)["k8s-worker-3"]["state"] == "unreachable"
    finally:
        p = run(lab, "repair", "k8s-worker-3", "link")
    assert p.returncode == 0, p.stderr
    rc, res = verify(lab, wait="10")
    assert rc == 0, failing(res)

    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    assert run(lab, "fail", "k8s-worker-3", "node").returncode == 0
    try:
        states = {Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] for p in pids}
        assert states == {"T"}, states
        rows = inspect(lab)
        assert rows["k8s-worker-3"]["state"] == "unreachable" and rows["k8s-worker-3"]["fault"] == "node"
    finally:
        p = run(lab, "repair", "k8s-worker-3")
    assert p.returncode == 0 and "node repaired" in p.stdout, p.stderr
    rc, res = verify(lab, wait="10")
    assert rc == 0, failing(res)


def test_topology_impairments_applied_by_up_and_removed_when_deleted(lab):
    t = topo(lab["tmp"], "impaired.yml", impairments=[{"node": "k8s-worker-3", "rate": "10mbit"}])
    st = up(lab, t)
    assert st["impairments"] == ["k8s-worker-3:ens192"]
    assert inspect(lab)["k8s-worker-3"]["impair"] == "rate 10mbit"
    table = run(lab, "inspect")
    assert "IMPAIR" in table.stdout and "rate 10mbit" in table.stdout
    if impair.netem_on_this_host():
        delayed = topo(lab["tmp"], "delayed.yml", impairments=[{"node": "k8s-worker-3", "delay": "100ms"}])
        up(lab, delayed)
        ping = run(lab, "exec", "k8s-worker-2", "--", "ping", "-c1", "-W2", f"10.{OCTET}.22.4")
        rtt = float(ping.stdout.split("time=")[1].split()[0])
        assert rtt >= 100, ping.stdout
    else:
        delayed = topo(lab["tmp"], "delayed.yml", impairments=[{"node": "k8s-worker-3", "delay": "100ms"}])
        p = labctl("up", "-t", delayed, home=lab["home"])
        assert p.returncode == 1 and "no sch_netem" in p.stderr and len(p.stderr.strip().splitlines()) <= 2
        assert inspect(lab)["k8s-worker-3"]["impair"] == "rate 10mbit"  # refused before anything changed
    st = up(lab)
    assert st["impairments"] == []
    assert inspect(lab)["k8s-worker-3"]["impair"] == ""
