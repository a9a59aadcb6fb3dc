"""Failed, interrupted and concurrent `up`s on real namespaces: down always cleans up."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, host_snapshot, labctl, renumbered, residue, write_yaml

pytestmark = pytest.mark.netns


def topo(tmp_path: Path, name: str, lan_octet: int) -> Path:
    """The seed lab under another name and LAN, so these tests never meet the seed lab's names."""
    return write_yaml(tmp_path / f"{name}.yml", renumbered(name, lan_octet))


@pytest.fixture
def lab(tmp_path, downs):
    home, before, made = downs

    def make(name: str, octet: int) -> Path:
        t = topo(tmp_path, name, octet)
        made.append(t)
        return t

    return make, home, before


def test_failed_up_names_host_task_log_then_down_cleans(lab):
    make, home, before = lab
    t = make("lcfail", 77)
    # something else already holds the name pod-a's namespace needs: a plain file, not a netns
    blocker = Path("/run/netns/lc-lcfail.k8s-worker-1.pod-a")
    blocker.parent.mkdir(exist_ok=True)
    blocker.touch()
    try:
        p = labctl("up", "-t", t, home=home)
        assert p.returncode == 1, p.stderr
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("labctl: error: k8s-worker-1: task 'Pods on Calico-style veths' failed:"), last
        log = Path(last.split("log file saved to ")[1].rstrip(")"))
        assert log.is_file() and "Pods on Calico-style veths" in log.read_text()
        assert "Traceback" not in p.stderr
        st = json.loads((home / "lcfail" / "state.json").read_text())
        assert st["phase"] == "failed" and "k8s-worker-1" in st["error"]
    finally:
        d = labctl("down", "-t", t, home=home)
        blocker.unlink(missing_ok=True)
    assert d.returncode == 0, d.stderr
    assert residue(before, host_snapshot(home)) == {}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_up_exits_128_plus_signal_resumes_and_cleans(lab, sig):
    make, home, before = lab
    t = make("lcint", 78)
    env = dict(os.environ, LABCTL_HOME=str(home), NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "labctl", "up", "-t", str(t)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = ""
    deadline = time.monotonic() + 60
    while "Running phase: Node network" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, seen + rest
    assert "interrupted" in rest
    st = json.loads((home / "lcint" / "state.json").read_text())
    assert st["phase"] == "interrupted" and st["stopped_at"]
    # ansible-playbook runs in a session of its own: the cancel must have stopped it
    left = subprocess.run(["pgrep", "-f", f"{home}/lcint"], capture_output=True, text=True).stdout.split()
    assert [
        p for p in left if int(p) != proc.pid and "ansible" in Path(f"/proc/{p}/cmdline").read_text(errors="ignore")
    ] == []
    again = labctl("up", "-t", t, home=home)
    assert again.returncode == 0, again.stderr
    v = labctl("verify", home=home, timeout=60)
    assert v.returncode == 0, v.stdout
    d = labctl("down", home=home)
    assert d.returncode == 0, d.stderr
    assert residue(before, host_snapshot(home)) == {}


def test_second_up_on_a_locked_lab_refuses_at_once(lab, tmp_path):
    make, home, _ = lab
    t = make("lclock", 79)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from labctl.app.lab import Lab; from labctl.plan import layout\n"
            "with Lab(layout.lab_dir('lclock')).lock():\n print('locked', flush=True); time.sleep(30)",
        ],
        env=dict(os.environ, LABCTL_HOME=str(home)),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        p = labctl("up", "-t", t, home=home)
        assert time.monotonic() - start < 10
        assert p.returncode == 1
        assert f"pid {holder.pid} holds its lock" in p.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder died without unlocking: the next up takes the lock over with a warning
    p = labctl("up", "-t", t, home=home)
    assert p.returncode == 0, p.stderr
    assert f"left by pid {holder.pid}" in p.stderr
