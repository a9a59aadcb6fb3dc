"""Reaching nodes of a real netns lab: `labctl exec` streams both ways, Ctrl-C ends the remote
command, an unreachable node is one line (no paramiko traceback), and nothing is sent to a node
unless the host's route to it goes out the lab's bridge (issue 15 items 2, 4, 7)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import labctl, real_lab, renumbered, write_yaml
from labctl.plan import names

pytestmark = pytest.mark.netns
NAME, OCTET = "lcacc", 57


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    topo = write_yaml(tmp_path_factory.mktemp(NAME) / "t.yml", renumbered(NAME, OCTET))
    with real_lab(topo) as r:
        yield {"home": r.home, "topo": topo, "dir": r.home / NAME}
    assert r.down.returncode == 0, r.down.stderr


def run(lab, *args, **kw):
    return labctl(*args, home=lab["home"], **kw)


def spawn(lab, *args) -> subprocess.Popen:
    env = dict(os.environ, LABCTL_HOME=str(lab["home"]), NO_COLOR="1")
    return subprocess.Popen(
        [sys.executable, "-m", "labctl", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_exec_forwards_stdin_with_its_end(lab):
    p = run(lab, "exec", "k8s-master", "--", "cat", input="hi\n", timeout=30)
    assert (p.returncode, p.stdout) == (0, "hi\n"), p.stderr


def test_exec_keeps_exit_code_and_streams_apart(lab):
    p = run(lab, "exec", "k8s-worker-1", "--", "sh", "-c", "echo out; echo err >&2; exit 7", input="", timeout=30)
    assert (p.returncode, p.stdout, p.stderr) == (7, "out\n", "err\n")


def test_exec_streams_output_as_it_comes(lab):
    p = spawn(lab, "exec", "k8s-master", "--", "sh", "-c", "echo a; sleep 2; echo b")
    try:
        seen = []
        for line in p.stdout:
            seen.append((line, time.monotonic()))
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
    assert [x for x, _ in seen] == [b"a\n", b"b\n"]
    assert seen[1][1] - seen[0][1] > 1.5  # `a` was on the screen while the command still slept


def test_exec_ctrl_c_ends_the_remote_command(lab):
    p = spawn(lab, "exec", "k8s-worker-2", "--", "sh", "-c", "echo pid=$$; exec sleep 300")
    pid = None
    try:
        line = p.stdout.readline().decode()
        assert line.startswith("pid="), line
        pid = int(line.split("=")[1])
        assert Path(f"/proc/{pid}").exists()
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=15) == 130
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "the remote sleep outlived Ctrl-C"
        assert "Traceback" not in p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def test_trace_to_the_internet_is_refused(lab):
    p = run(lab, "trace", "pod-a", "8.8.8.8")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "8.8.8.8" in p.stderr and "is not an address of lab" in p.stderr and p.stdout == ""


def test_a_hung_sshd_is_one_line_without_traceback(lab):
    """sshd stopped (SIGSTOP): TCP connects, no banner comes; paramiko used to log its traceback."""
    pid = int((lab["dir"] / "nodes" / "k8s-worker-2" / "sshd.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        for cmd in (["inspect"], ["verify"]):
            p = run(lab, *cmd, timeout=120)
            assert p.returncode != 0 or cmd == ["inspect"], p.stdout
            assert "Traceback" not in p.stderr and "Error reading SSH protocol banner" not in p.stderr, p.stderr
            assert sum("k8s-worker-2" in line for line in p.stderr.splitlines()) <= 1, p.stderr
            assert "k8s-worker-2" in p.stdout  # the node's row says it is unreachable
    finally:
        os.kill(pid, signal.SIGCONT)


def test_lab_bridge_gone_nothing_is_sent(lab):
    """After the bridge is deleted by hand, the host's route to the nodes is its default route:
    every command that would connect refuses at once, naming the fix. (Last: it breaks the lab.)"""

    br = names.bridge("lc", NAME)
    subprocess.run(["ip", "link", "del", br], check=True)
    want = f"labctl: error: lab bridge {br} is gone: run labctl down / up"
    for cmd in (["verify"], ["inspect"], ["exec", "k8s-master", "--", "true"], ["trace", "pod-a", "pod-b"]):
        t = time.monotonic()
        p = run(lab, *cmd, timeout=60, input="")
        assert p.returncode == 1, (cmd, p.stdout, p.stderr)
        assert p.stderr.strip().splitlines() == [want], (cmd, p.stderr)
        assert time.monotonic() - t < 10, cmd  # refused, not timed out
