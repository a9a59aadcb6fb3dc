"""Issue 19 part A on real namespaces: another home's lab of the same name is never taken down; `down`
removes what exists on the host when the lab's data is corrupt or was written over, and ends a node's
processes whose namespace was deleted by hand; `up` rebuilds such a node."""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import host_snapshot, labctl, renumbered, residue, write_yaml
from labctl.host.hostside import alive, read_pid
from labctl.plan import names
from labctl.providers.netns import provider as netns

pytestmark = pytest.mark.netns
SLEEP = "import time; time.sleep(600)"


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def links() -> str:
    return ip("-o", "link", "show").stdout


@contextlib.contextmanager
def host_lab(root: Path, nodes: list[str]):
    """What a netns lab under `root` has on the host, without building it: its bridge, a namespace
    per node on it (veth named as labctl names it), and in each a process that names its node dir
    (as sshd -f <lab>/nodes/<node>/sshd_config does). Removed by pid and name afterwards."""
    name = root.name
    br = names.bridge("lc", name)
    procs: list[subprocess.Popen] = []
    ip("link", "add", br, "type", "bridge")
    try:
        for n in nodes:
            ns, veth = names.netns("lc", name, n), names.host_link("lc", name, n)
            ip("netns", "add", ns)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", veth, "master", br, "up")
            # one process (no child to outlive it) whose command line names the node dir
            argv = ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", SLEEP, f"{root}/nodes/{n}/sshd_config"]
            procs.append(subprocess.Popen(argv, start_new_session=True))
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for n in nodes:
            ip("netns", "del", names.netns("lc", name, n), check=False)
            ip("link", "del", names.host_link("lc", name, n), check=False)
        ip("link", "del", br, check=False)


def seedlike(tmp_path: Path, name: str, octet: int, drop: str | None = None) -> Path:
    d = renumbered(name, octet)
    if drop:
        labels = d["nodes"].pop(drop).get("labels") or {}
        d["workloads"] = [w for w in d["workloads"] if not labels.items() & w["node_selector"].items()]
    return write_yaml(tmp_path / f"{name}{'-' + drop if drop else ''}.yml", d)


def one_line_error(p, *words):
    assert p.returncode != 0, p.stderr
    errors = [x for x in p.stderr.splitlines() if x.startswith("labctl: error:")]  # `up` logs its phases first
    assert len(errors) == 1 and p.stderr.strip().endswith(errors[0]) and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in errors[0], p.stderr
    return errors[0]


# -- 1. a lab of the same name in another home ---------------------------------------------------


def test_down_by_topology_never_takes_another_homes_lab(tmp_path, labhome):
    a, b = tmp_path / "a", labhome
    a.mkdir()
    t = seedlike(tmp_path, "lcfor", 74)
    before = host_snapshot(b)
    nodes = ["k8s-master", "k8s-worker-1", "k8s-worker-2"]
    with host_lab(a / "lcfor", nodes) as procs:
        seen = set()
        for args in (["down", "-t", t], ["validate", "-t", t], ["up", "--dry-run", "-t", t], ["up", "-t", t]):
            p = labctl(*args, home=b)
            seen.add((p.returncode, one_line_error(p, "another labctl home", str(a / "lcfor"), "hint:")))
            assert all(x.poll() is None for x in procs), args  # the other home's lab runs on
            assert all(Path(f"/run/netns/{names.netns('lc', 'lcfor', n)}").exists() for n in nodes)
            assert netns.link_exists(names.bridge("lc", "lcfor"))
        assert len({code for code, _ in seen}) == 1  # one problem, one exit code
        assert labctl("down", "--name", "lcfor", home=b).returncode == 2  # as before: no lab of this home
        assert not (b / "lcfor").exists()
    assert residue(before, host_snapshot(b)) == {}


# -- 6. a corrupt topology-data.json ---------------------------------------------------------------


def test_a_corrupt_lab_model_gives_one_error_and_down_still_removes_the_lab(tmp_path, labhome):
    t = seedlike(tmp_path, "lccor", 75)
    before = host_snapshot(labhome)
    assert labctl("render", "-t", t, home=labhome).returncode == 0
    lab = labhome / "lccor"
    (lab / "state.json").write_text(json.dumps({"name": "lccor", "provider": "netns", "phase": "ready"}))
    nodes = ["k8s-master", "k8s-worker-1", "k8s-worker-2"]
    with host_lab(lab, nodes) as procs:
        data = lab / "topology-data.json"
        data.write_text(data.read_text()[:200])  # truncated
        for args in (["inspect"], ["up", "-t", t], ["verify"]):
            one_line_error(labctl(*args, home=labhome), "is not a lab model", "hint:", "labctl down")
        d = labctl("down", home=labhome)
        assert d.returncode == 0, d.stderr
        assert "removed" in d.stderr
        assert all(p.poll() is not None for p in procs)
        assert not any(Path(f"/run/netns/{names.netns('lc', 'lccor', n)}").exists() for n in nodes)
        assert f": {names.bridge('lc', 'lccor')}" not in links()
        assert not lab.exists()
    assert residue(before, host_snapshot(labhome)) == {}


# -- 7. state.json gone: render refuses, down acts on what the host has -----------------------------


def test_render_refuses_a_running_lab_without_state_and_down_removes_nodes_the_data_lacks(tmp_path, labhome):
    t = seedlike(tmp_path, "lcnost", 76)
    smaller = seedlike(tmp_path, "lcnost", 76, drop="k8s-worker-2")
    before = host_snapshot(labhome)
    assert labctl("render", "-t", t, home=labhome).returncode == 0
    lab = labhome / "lcnost"
    nodes = ["k8s-master", "k8s-worker-1", "k8s-worker-2"]
    with host_lab(lab, nodes) as procs:
        data = lab / "topology-data.json"
        full = data.read_text()
        r = labctl("render", "-t", smaller, home=labhome)
        one_line_error(r, "belongs to a lab that is up", "labctl down")
        assert r.returncode == 2 and data.read_text() == full
        # what the old render wrote: the lab's data without a node that still runs
        assert labctl("render", "-t", smaller, "-o", tmp_path / "r", home=labhome).returncode == 0
        data.write_text((tmp_path / "r" / "topology-data.json").read_text().replace(str(tmp_path / "r"), str(lab)))
        d = labctl("down", home=labhome, timeout=60)
        assert d.returncode == 0, d.stderr
        assert all(p.poll() is not None for p in procs)
        assert not any(Path(f"/run/netns/{names.netns('lc', 'lcnost', n)}").exists() for n in nodes)
        assert f"lc{names.lab_id('lc', 'lcnost')}" not in links()
    assert residue(before, host_snapshot(labhome)) == {}


# -- 5. a node's namespace deleted by hand -----------------------------------------------------------


def test_a_node_namespace_deleted_by_hand_is_rebuilt_by_up_and_its_processes_ended(tmp_path, downs):
    home, before, made = downs
    t = seedlike(tmp_path, "lcnsdel", 77)
    made.append(t)
    up = labctl("up", "-t", t, home=home)
    assert up.returncode == 0, up.stderr
    node = home / "lcnsdel" / "nodes" / "k8s-worker-1"
    ns = names.netns("lc", "lcnsdel", "k8s-worker-1")

    def daemons() -> list[int]:
        pids = [read_pid(node / "sshd.pid"), read_pid(node / "bird.pid")]
        assert all(pids), pids
        return pids

    old = daemons()
    ip("netns", "del", ns)
    assert all(alive(p) for p in old)  # they live on in the detached namespace
    again = labctl("up", "-t", t, home=home)
    assert again.returncode == 0, again.stderr
    assert not any(alive(p) for p in old)
    new = daemons()
    held = {Path(f"/proc/{p}/ns/net").stat().st_ino for p in new}
    assert held == {Path(f"/run/netns/{ns}").stat().st_ino}  # in the node's namespace, built afresh
    p = labctl("exec", "k8s-worker-1", "--", "ip", "-br", "addr", "show", "ens192", home=home)
    assert p.returncode == 0 and "10.77.22.2" in p.stdout, p.stderr

    ip("netns", "del", ns)
    d = labctl("down", home=home, timeout=120)
    assert d.returncode == 0, d.stderr
    assert not any(alive(p) for p in new)
    assert residue(before, host_snapshot(home)) == {}


# -- 10. a router's asn changed in place ---------------------------------------------------------------


def test_a_routers_new_asn_converges_in_one_up():
    from test_racks import Lab, racks

    text = racks(name="rk-asn", octet=182)
    with Lab(text, "rk-asn") as lab:
        lab.file.write_text(text.replace("rack-b: 10.182.2.254}, asn: 65000}", "rack-b: 10.182.2.254}, asn: 65010}"))
        dry = lab.run("up", "-t", lab.file, "--dry-run")
        assert "~ router core: asn 65000 -> 65010" in dry.stdout, dry.stdout
        assert "bgp        k8s-master, k8s-worker-1, k8s-worker-2" in dry.stdout, dry.stdout
        up = lab.run("up", "-t", lab.file, check=False)
        assert up.returncode == 0, up.stderr
        v = lab.verify()
        assert v["rc"] == 0, v
        assert v["checks"][("bgp", "core")]["detail"] == "3/3 Established"
        bgp = json.loads(lab.run("bgp", "k8s-worker-2", "--format", "json").stdout)[0]
        assert {s["peer_as"] for s in bgp["sessions"]} == {"65010"}, bgp
