"""Issue 15 on real namespaces: a lab whose directory was deleted by hand, and Ctrl-C during
bootstrap and during down (each must say so, record it, and leave a state `down` finishes)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import host_snapshot, labctl, renumbered, residue, write_yaml

pytestmark = pytest.mark.netns


def seedlike(tmp_path: Path, name: str, octet: int) -> Path:
    return write_yaml(tmp_path / f"{name}.yml", renumbered(name, octet))


def spaces(lab: str) -> list[str]:
    return sorted(p.name for p in Path("/run/netns").iterdir() if p.name.startswith(f"lc-{lab}."))


@pytest.fixture
def env(downs):
    return downs  # whatever a failed test left: by the topology's names, then by the lab's name


def start(home: Path, *args) -> subprocess.Popen:
    # a session of its own, signalled as a whole like a terminal's Ctrl-C reaches labctl and its children
    return subprocess.Popen(
        [sys.executable, "-m", "labctl", *map(str, args)],
        env=dict(os.environ, LABCTL_HOME=str(home), NO_COLOR="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_a_lab_whose_directory_was_deleted_is_listed_and_removed_by_name(env, tmp_path):
    home, before, made = env
    t = seedlike(tmp_path, "lcorph", 71)
    made.append(t)
    assert labctl("up", "-t", t, home=home).returncode == 0
    # 13: inside a node, /etc/hostname is the node's name (as `hostname` is)
    p = labctl("exec", "k8s-worker-1", "--", "cat", "/etc/hostname", home=home)
    assert p.returncode == 0 and p.stdout.strip() == "k8s-worker-1", p.stderr
    assert Path("/etc/hostname").read_text().strip() != "k8s-worker-1"

    shutil.rmtree(home / "lcorph")
    assert spaces("lcorph")  # namespaces, sshd and BIRD run on without their directory
    listed = labctl("list", "--format", "json", home=home)
    assert {"name": "lcorph", "phase": "orphaned"}.items() <= json.loads(listed.stdout)[0].items(), listed.stdout
    up = labctl("up", "-t", t, home=home)
    assert up.returncode == 1 and "labctl down --name lcorph" in up.stderr, up.stderr
    bare = labctl("down", home=home)  # no lab dir at all: it says which name to give
    assert bare.returncode == 2 and "--name lcorph" in bare.stderr, bare.stderr

    d = labctl("down", "--name", "lcorph", home=home)
    assert d.returncode == 0, d.stderr
    assert "lab lcorph removed" in d.stderr
    assert residue(before, host_snapshot(home)) == {}
    assert not spaces("lcorph") and not (home / "lcorph").exists()
    again = labctl("down", "--name", "lcorph", home=home)
    assert again.returncode == 0, again.stderr
    assert "lcorph" not in labctl("list", home=home).stdout


def interrupt_when(proc: subprocess.Popen, ready, sig: int) -> tuple[str, str]:
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "finished before the moment to interrupt it"
    os.killpg(proc.pid, sig)
    return proc.communicate(timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_during_bootstrap_says_so_and_down_finishes(env, tmp_path, sig):
    home, before, made = env
    t = seedlike(tmp_path, "lcbint", 72)
    made.append(t)
    proc = start(home, "up", "-t", t)
    out, err = interrupt_when(proc, lambda: len(spaces("lcbint")) >= 1, sig)
    assert proc.returncode == 128 + sig, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("labctl: interrupted during bootstrap"), err
    assert "failed" not in err and "exit -" not in err
    st = json.loads((home / "lcbint" / "state.json").read_text())
    assert st["phase"] == "interrupted" and st["stopped_at"].startswith("bootstrap")
    d = labctl("down", home=home)
    assert d.returncode == 0, d.stderr
    assert residue(before, host_snapshot(home)) == {}


def test_ctrl_c_during_down_says_so_and_a_second_down_finishes(env, tmp_path):
    home, before, made = env
    t = seedlike(tmp_path, "lcdint", 73)
    made.append(t)
    assert labctl("up", "-t", t, home=home).returncode == 0
    n = len(spaces("lcdint"))
    proc = start(home, "down")
    out, err = interrupt_when(proc, lambda: len(spaces("lcdint")) < n, signal.SIGINT)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("labctl: interrupted during teardown"), err
    assert "labctl down" in err
    st = json.loads((home / "lcdint" / "state.json").read_text())
    assert st["phase"] == "down-interrupted"
    listed = labctl("list", "-f", "json", home=home)
    assert json.loads(listed.stdout)[0]["phase"] == "down-interrupted"
    d = labctl("down", home=home)
    assert d.returncode == 0, d.stderr
    assert residue(before, host_snapshot(home)) == {}
    assert not (home / "lcdint").exists()
