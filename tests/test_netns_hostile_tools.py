"""Issue 19, part B, on a real netns lab: the shipped vxlan-no-bgp sample (two racks behind a router,
`calico.bgp: none`) under another name and addresses, with two `checks:`. Impairments cleared while
the node's SSH is down (item 4), TERM/HUP ending what runs on the nodes (item 8), a check that runs
past its timeout (item 9), a lab without BGP (item 11), capture -w keeping an old file (item 14), a
router's interfaces in capture and the IMPAIR column (item 15), and the low ones (a recorded fault
named, `capture NODE:any`, exec's 128+n)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, labctl, real_lab, write_yaml

pytestmark = pytest.mark.netns

NAME = "lctools"
NODES = ("k8s-master", "k8s-worker-1", "k8s-worker-2")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = yaml.safe_load((ROOT / "inventories" / "vxlan-no-bgp" / "topology.yml").read_text())
    text = yaml.safe_dump(d).replace("10.13.", "10.171.")
    d = yaml.safe_load(text)
    d["name"] = NAME
    d["workloads"] = [
        {"name": "pod-a", "node_selector": {"worker": "no-1"}},
        {"name": "pod-b", "node_selector": {"worker": "no-2"}},
    ]
    d["checks"] = [
        {"name": "slow", "exec": {"node": "k8s-worker-1", "command": "sleep 100"}, "timeout": 2},
        {"name": "quick", "exec": {"node": "k8s-master", "command": "hostname"}, "expect": "k8s-master"},
    ]
    t = write_yaml(tmp_path_factory.mktemp(NAME) / f"{NAME}.yml", d)
    with real_lab(t) as r:
        yield r.home


def ns(node: str) -> str:
    return f"lc-{NAME}.{node}"


def procs(comm: str, nodes=NODES, args: str = "") -> list[int]:
    """Pids named `comm` in the lab's node and pod namespaces (args: a part of their command line)."""
    out = []
    spaces = [ns(n) for n in nodes] + [f"{ns(n)}.{p}" for n in nodes for p in ("pod-a", "pod-b")]
    for space in spaces:
        pids = subprocess.run(["ip", "netns", "pids", space], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() != comm:
                    continue
                if args not in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    continue
            except OSError:
                continue
            out.append(int(pid))
    return sorted(set(out))


def wait_for(cond, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(home: Path, *args) -> subprocess.Popen:
    env = dict(os.environ, LABCTL_HOME=str(home), NO_COLOR="1")
    return subprocess.Popen(
        [sys.executable, "-m", "labctl", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def qdiscs(netns: str) -> dict[str, list[str]]:
    out = subprocess.run(["ip", "netns", "exec", netns, "tc", "-j", "qdisc", "show"], capture_output=True, text=True)
    got: dict[str, list[str]] = {}
    for q in json.loads(out.stdout or "[]"):
        got.setdefault(q["dev"], []).append(q["kind"])
    return got


def rows(home: Path) -> dict:
    p = labctl("inspect", "-f", "json", home=home, timeout=120)
    assert p.returncode == 0, p.stderr
    return {r["name"]: r for r in json.loads(p.stdout)}


# -- item 11 ------------------------------------------------------------------------------------------


def test_a_lab_without_bgp_is_running_in_inspect_and_bgp_says_why(lab):
    got = rows(lab)
    assert {n: got[n]["state"] for n in NODES} == dict.fromkeys(NODES, "running"), got
    p = labctl("bgp", home=lab, timeout=60)
    assert p.returncode == 2 and "Unable to connect" not in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1 and f"lab {NAME} runs no BGP (calico.bgp: none)" in p.stderr, p.stderr


# -- item 15 and low: a router's interface, `any` -------------------------------------------------------


@pytest.mark.parametrize("target", ["core:rack-a", "k8s-master:any"])
def test_capture_on_a_router_interface_and_on_any(lab, target):
    p = labctl("capture", target, "--duration", "1", home=lab, timeout=60)
    assert p.returncode == 0, p.stderr
    assert f"packet(s) captured on {target}" in p.stderr, p.stderr
    assert procs("tcpdump", NODES) == []


def test_impairments_on_a_router_a_tunnel_and_lo_show_in_inspect(lab):
    set_ = [("core:rack-b", "10mbit"), ("k8s-worker-1:vxlan.calico", "1mbit"), ("k8s-master:lo", "100mbit")]
    try:
        for target, rate in set_:
            p = labctl("impair", target, "--rate", rate, home=lab, timeout=60)
            assert p.returncode == 0, p.stderr
        got = rows(lab)
        assert got["core"]["impair"] == "rack-b: rate 10mbit", got["core"]
        assert got["k8s-worker-1"]["impair"] == "vxlan.calico: rate 1mbit", got["k8s-worker-1"]
        assert got["k8s-master"]["impair"] == "lo: rate 100mbit", got["k8s-master"]
        table = labctl("inspect", home=lab, timeout=120).stdout
        assert "IMPAIR" in table and "rack-b: rate 10mbit" in table, table
    finally:
        for target, _ in set_:
            labctl("impair", target, "--clear", home=lab, timeout=60)
    assert not any(rows(lab)[n]["impair"] for n in (*NODES, "core"))


# -- item 4: clearing does not depend on the node's own link --------------------------------------------


def test_impair_and_clear_work_while_the_nodes_sshd_does_not_answer(lab):
    """Stand-in for `--loss 50%` (no sch_netem on this kernel): the node's sshd stopped (SIGSTOP by pid),
    so nothing over its SSH gets an answer; setting and clearing go into its namespace from the host."""
    node = "k8s-worker-2"
    sshd = procs("sshd", (node,))
    assert sshd
    try:
        for pid in sshd:
            os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        p = labctl("impair", node, "--rate", "2mbit", home=lab, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "tbf" in qdiscs(ns(node))["ens192"]
        p = labctl("impair", node, "--clear", home=lab, timeout=60)
        assert p.returncode == 0 and "no impairment" in p.stdout, p.stdout + p.stderr
        assert "tbf" not in qdiscs(ns(node))["ens192"]
        assert time.monotonic() - t0 < 20
    finally:
        for pid in sshd:
            os.kill(pid, signal.SIGCONT)
        labctl("impair", node, "--clear", home=lab, timeout=60)


# -- item 8: TERM and HUP like INT -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_term_and_hup_stop_capture_and_its_tcpdump(lab, sig):
    p = start(lab, "capture", "k8s-master")
    try:
        assert wait_for(lambda: procs("tcpdump")), p.stderr
        time.sleep(0.3)
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 128 + sig, err
        assert "labctl: interrupted" in err and "Traceback" not in err
        assert wait_for(lambda: not procs("tcpdump"), 5), procs("tcpdump")
    finally:
        p.kill()
        kill_all(procs("tcpdump"))


def test_term_ends_the_command_exec_started(lab):
    p = start(lab, "exec", "k8s-worker-1", "--", "sleep", "100")
    try:
        assert wait_for(lambda: procs("sleep", ("k8s-worker-1",), "sleep 100")), p.stderr
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 143, err
        assert "the command on the node was ended" in err
        assert wait_for(lambda: not procs("sleep", ("k8s-worker-1",), "sleep 100"), 5)
    finally:
        p.kill()
        kill_all(procs("sleep", ("k8s-worker-1",), "sleep 100"))


def test_term_stops_every_tcpdump_of_trace_capture(lab):
    p = start(lab, "trace", "pod-a", "pod-b", "--capture")
    try:
        assert wait_for(lambda: procs("tcpdump"), 30), p.communicate(timeout=30)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 143, err
        assert wait_for(lambda: not procs("tcpdump"), 5), procs("tcpdump")
    finally:
        p.kill()
        kill_all(procs("tcpdump"))


# -- low: exec's exit code by signal, a recorded fault named ----------------------------------------------


def test_exec_of_a_command_killed_by_a_signal_exits_128_plus_n(lab):
    p = labctl("exec", "k8s-master", "--", "sh", "-c", "kill -KILL $$", home=lab, timeout=60)
    assert p.returncode == 137, p.stderr
    p = labctl("exec", "k8s-master", "--", "sh", "-c", "exit 3", home=lab, timeout=60)
    assert p.returncode == 3, p.stderr


def test_a_node_frozen_by_labctl_fail_is_named_in_the_error(lab):
    node = "k8s-worker-2"
    labctl("fail", node, "node", home=lab, check=True, timeout=60)
    try:
        p = labctl("exec", node, "--", "true", home=lab, timeout=60)
        assert p.returncode == 1, p.stderr
        assert f"{node} is failed on purpose by `labctl fail {node} node`: frozen" in p.stderr, p.stderr
        assert f"`labctl repair {node}`" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    finally:
        labctl("repair", node, home=lab, check=True, timeout=120)


# -- item 9 ---------------------------------------------------------------------------------------------


def test_a_check_past_its_timeout_fails_alone_and_is_ended_on_the_node(lab):
    t0 = time.monotonic()
    p = labctl("verify", "--only", "checks", "-f", "json", "--wait", "0", home=lab, timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    got = {c["target"]: c for c in json.loads(p.stdout)}
    assert not got["slow"]["ok"] and "sleep 100: timed out (timeout: 2 s), ended on the node" in got["slow"]["detail"]
    assert got["quick"]["ok"], got
    assert took < 25, took
    assert procs("sleep", ("k8s-worker-1",), "sleep 100") == []


# -- item 14 ---------------------------------------------------------------------------------------------


def test_a_capture_that_does_not_start_leaves_an_old_pcap_as_it_was(lab, tmp_path):
    old = tmp_path / "old.pcap"
    old.write_bytes(b"an earlier capture")
    p = labctl("capture", "k8s-master", "--filter", "-v", "-w", old, home=lab, timeout=60)
    assert p.returncode == 2 and "a BPF expression, not tcpdump options" in p.stderr, p.stderr
    assert old.read_bytes() == b"an earlier capture"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["old.pcap"]
    assert procs("tcpdump") == []
