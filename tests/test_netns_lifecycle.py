"""Reconcile, faults and repair, host safety, secrets, and two labs side by side, on real namespaces."""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import SEED, host_snapshot, labctl, renumbered, residue, write_yaml
from labctl.plan import names

pytestmark = pytest.mark.netns


def seedlike(tmp_path: Path, name: str, octet: int, extra_worker: bool = False, **labels) -> Path:
    d = renumbered(name, octet)
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
    return write_yaml(tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.yml", d)


@pytest.fixture
def env(downs):
    return downs


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


def lab_neighbours(lab: str) -> dict[str, int]:
    """The IPv4 neighbour entries a lab holds now, counted in each of its namespaces (nodes and pods)
    and on its bridge in the host's: permanent ones, and all others (which gc_thresh3 counts)."""

    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
    count = {"permanent": 0, "dynamic": 0}
    for ns in [None] + [s.split()[0] for s in listed if s.startswith(f"lc-{lab}.")]:
        where = ["-n", ns] if ns else []
        dev = [] if ns else ["dev", names.bridge("lc", lab)]
        out = subprocess.run(
            ["ip", "-4", "-j", *where, "neigh", "show", *dev], capture_output=True, text=True, check=True
        )
        for e in json.loads(out.stdout or "[]"):
            count["permanent" if "PERMANENT" in e.get("state", []) else "dynamic"] += 1
    return count


def test_the_neighbour_estimate_is_what_a_live_lab_holds_and_none_of_it_counts_against_gc_thresh(env, tmp_path):
    """Issue 13: verify of a 100-node lab lost pings to "neighbor table overflow" on a default host,
    while preflight estimated only BGP and SSH. Every neighbour the lab uses is now a permanent entry
    (exempt from gc_thresh); the estimate is pinned against a live count after up and verify, which
    exercise SSH, every BGP session, and pod-to-pod pings across nodes."""
    from labctl.plan.model import LabModel
    from labctl.providers.netns import checks as netns

    home, before, tops = env
    t = tmp_path / "nb.yml"
    assert labctl("init", "--nodes", 6, "--route-reflectors", 2, "-n", "lcnb", "-o", t).returncode == 0
    d = yaml.safe_load(t.read_text())
    d["network"] = {"lan": "10.90.0.0/16", "gateway": "10.90.255.254"}
    for i, node in enumerate(d["nodes"].values()):
        node["address"] = f"10.90.22.{i + 1}"
    t.write_text(yaml.safe_dump(d, sort_keys=False))
    tops.append(t)
    up = labctl("up", "-t", t, home=home)
    assert up.returncode == 0, up.stderr
    assert checks(home, "lcnb")[0] == 0
    need = netns.neighbour_need(LabModel.load(home / "lcnb" / "topology-data.json"))
    # host 6, nodes 6 x (gateway + 5 peers), VTEPs 6 x 5 (no ipip here), 6 pods x 2 sides
    assert need == netns.NeighbourNeed(permanent=6 + 36 + 30 + 12, dynamic=0)
    assert lab_neighbours("lcnb") == {"permanent": need.permanent, "dynamic": need.dynamic}
    assert netns.kernel_exempts_permanent()  # the premise: this kernel does not count them
    assert labctl("down", "--name", "lcnb", home=home).returncode == 0
    assert residue(before, host_snapshot(home)) == {}


def test_neighbour_need_counts_every_entry_and_leaves_none_to_arp():
    from labctl.outputs import render
    from labctl.plan.layout import LabDir
    from labctl.providers.netns import checks as netns
    from labctl.spec import generate, schedule, topology

    def need(text: str, ipip: bool = False):
        plan = schedule.plan(topology.loads(text))
        return netns.neighbour_need(render.build(plan, LabDir(Path("/x")), ipip))

    # the seed with VXLAN: host 3, nodes 3 x (gateway + 2 peers), VTEPs 3 x 2, two pods x 2 sides
    assert need(SEED.read_text()) == netns.NeighbourNeed(permanent=3 + 9 + 6 + 4, dynamic=0)
    assert need(SEED.read_text(), ipip=True).permanent == 3 + 9 + 4  # tunl0 has no neighbours
    big = need(generate.topology(100, reflectors=2))
    assert big == netns.NeighbourNeed(permanent=100 + 100 * 100 + 100 * 99 + 2 * 100, dynamic=0)


def test_gc_thresh_limits_apply_only_where_the_kernel_counts_permanent_entries(tmp_path, monkeypatch):
    from labctl.errors import HostError
    from labctl.outputs import render
    from labctl.plan.layout import LabDir
    from labctl.providers.netns import checks as netns
    from labctl.spec import generate, schedule, topology

    (tmp_path / "gc_thresh2").write_text("512\n")
    (tmp_path / "gc_thresh3").write_text("1024\n")
    monkeypatch.setattr(netns, "GC_THRESH3", tmp_path / "gc_thresh3")

    def data(text: str):
        plan = schedule.plan(topology.loads(text))
        return render.build(plan, LabDir(Path("/x")), ipip=True)

    releases = ("4.18.0-553.el8_10.x86_64", "4.19.0", "5.10.0-33-amd64", "6.18.44-fc")
    assert [netns.kernel_exempts_permanent(r) for r in releases] == [False, True, True, True]
    big = data(generate.topology(100, reflectors=2))
    # the kernels of today: nothing the lab writes counts, at any size, mesh or not
    assert netns.check_neighbours(big) == [] and netns.check_neighbours(data(generate.topology(60))) == []
    monkeypatch.setattr(netns, "kernel_exempts_permanent", lambda release=None: False)
    assert netns.check_neighbours(data(SEED.read_text())) == []  # 3 + 9 + 4
    (warning,) = netns.check_neighbours(data(generate.topology(25)))  # 25 + 625 + 2 * 25 (a pod per node)
    assert "needs 700 neighbour entries, over the host's gc_thresh2 (512)" in warning
    assert "gc_thresh2=1400" in warning
    with pytest.raises(HostError) as e:
        netns.check_neighbours(big)  # 100 + 10000 + 2 * 100
    assert "needs 10300 neighbour entries" in str(e.value) and "gc_thresh3 = 1024" in str(e.value)
    assert "gc_thresh3=41200" in e.value.hint


def test_bird_starts_with_the_node_and_the_bgp_play_programs_what_the_kernel_refused(env, tmp_path):
    """BIRD starts in bootstrap, as calico-node starts it with its pod, so its 1 s connect delay passes
    while ansible-playbook starts. Its routes then arrive before the node play made the tunnel device
    (the kernel refuses a route through a device that does not exist): the BGP play must find and
    program them, and a second `up` changes nothing."""
    home, before, tops = env
    t = seedlike(tmp_path, "lcbird", 89)
    tops.append(t)
    # bootstrap only: nodes, sshd and BIRD, none of the playbook's tasks
    assert labctl("up", "-t", t, "--tags", "never", home=home).returncode == 0
    nodes = home / "lcbird" / "nodes"
    for n in ("k8s-master", "k8s-worker-1", "k8s-worker-2"):
        pid = int((nodes / n / "bird.pid").read_text())
        assert os.path.exists(f"/proc/{pid}")
        ns = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout.split()
        assert ns == [f"lc-lcbird.{n}"]
    sock = str(nodes / "k8s-master" / "bird.ctl")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(["birdc", "-s", sock, "show", "protocols"], capture_output=True, text=True).stdout
        if out.count("Established") == 2:
            break
        time.sleep(0.1)
    assert out.count("Established") == 2, out
    # no tunnel device yet: the blocks BIRD learned are not in the kernel
    routes = subprocess.run(["ip", "-n", "lc-lcbird.k8s-master", "route", "show", "proto", "bird"],
                            capture_output=True, text=True).stdout  # fmt: skip
    assert "192.168.1.0/24" not in routes and "192.168.2.0/24" not in routes, routes

    up = labctl("up", "-t", t, home=home)
    assert up.returncode == 0, up.stderr
    code, got = checks(home, "lcbird")
    assert code == 0, [c for c in got if c["status"] != "pass"]
    bgp_play = up.stderr.split("BIRD configured and running")[1].split("==>")[0]
    assert bgp_play.count("changed") == 3, up.stderr  # every node: its refused routes programmed
    again = labctl("up", "-t", t, home=home)
    assert again.returncode == 0 and " changed " not in again.stderr, again.stderr
