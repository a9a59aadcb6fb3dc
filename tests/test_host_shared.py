"""What the providers that build on this host share (labctl/host/): one terminate, one way to make a
bridge, one BIRD command line, one preflight."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from labctl.errors import HostError, UsageError
from labctl.host import birdrun, links, preflight, sh
from labctl.host.hostside import alive, lan_mac, terminate

ROOT = Path(__file__).resolve().parents[1]


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen(["python3", "-c", code], stdin=subprocess.DEVNULL)


@pytest.mark.unit
def test_terminate_kills_what_ignores_sigterm_and_rereads_the_pids_for_sigkill():
    """`again`: a process that appeared after SIGTERM (a fork in a namespace) gets the SIGKILL too."""
    stubborn = _spawn("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
    polite = _spawn("import time; time.sleep(60)")
    late = _spawn("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
    procs = [stubborn, polite, late]
    try:
        time.sleep(0.3)  # the handlers are in place
        t0 = time.monotonic()
        left = terminate([stubborn.pid, polite.pid], 1.0, again=lambda: [stubborn.pid, late.pid])
        assert left == [] and time.monotonic() - t0 < 2.0
        for p in procs:
            p.wait(timeout=5)
        assert not any(alive(p.pid) for p in procs)
        assert polite.returncode == -15 and stubborn.returncode == -9 and late.returncode == -9
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.unit
def test_one_bird_command_line_for_every_way_it_starts(tmp_path):
    nd, sock = tmp_path / "n1", str(tmp_path / "n1" / "bird.ctl")
    argv = birdrun.argv(nd, sock, "/usr/sbin/bird")
    assert argv == ["/usr/sbin/bird", "-c", f"{nd}/bird.conf", "-s", sock, "-P", f"{nd}/bird.pid"]
    cmd = birdrun.start_command(nd, sock)
    assert cmd.startswith("setsid -w bird -c ") and shlex.split(cmd)[2:9] == ["bird", *argv[1:]]
    script = birdrun.up_script(nd, sock, tmp_path / "rendered.conf")
    head = script.splitlines()[:2]
    assert head == [f"conf={nd}/bird.conf sock={sock} pidfile={nd}/bird.pid", f"new=$(cat {tmp_path}/rendered.conf)"]
    assert 'setsid -w bird -c "$conf" -s "$sock" -P "$pidfile"' in script  # the role's own bird-up.sh


@pytest.mark.unit
def test_a_bird_pid_file_counts_only_while_its_process_names_the_socket(tmp_path):
    nd = tmp_path / "n1"
    nd.mkdir()
    sock = str(nd / "bird.ctl")
    other = _spawn("import time; time.sleep(60)")
    mine = subprocess.Popen(["python3", "-c", "import time; time.sleep(60)", sock], stdin=subprocess.DEVNULL)
    try:
        (nd / "bird.pid").write_text(f"{other.pid}\n")
        assert birdrun.running(nd, sock) is None  # a reused pid is not our BIRD
        (nd / "bird.pid").write_text(f"{mine.pid}\n")
        assert birdrun.running(nd, sock) == mine.pid
    finally:
        for p in (other, mine):
            p.kill()
            p.wait()


@pytest.mark.unit
def test_preflight_helpers_refuse_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="has characters unsafe in QEMU arguments") as e:
        preflight.safe_dir(tmp_path / "a b", "QEMU arguments")
    assert e.value.exit_code == 2
    preflight.safe_dir(tmp_path / "ok_dir-1.x", "QEMU arguments")
    with pytest.raises(HostError, match=r"missing tools: no-such-tool-1, no-such-tool-2"):
        preflight.need_tools(["sh", "no-such-tool-1", "no-such-tool-2"], "apt-get install it")
    preflight.need_tools(["sh", "sshd"], "")  # sshd: in /usr/sbin, which a user's PATH may lack
    deep = tmp_path / ("d" * 120) / "bird.ctl"
    with pytest.raises(HostError, match="too deep for Unix socket paths"):
        preflight.socket_paths(tmp_path, [tmp_path / "short", deep])
    preflight.socket_paths(tmp_path, [])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(
        HostError, match=r"^the qemu provider needs root \(bridge and taps\) \(hint: run it with sudo\)$"
    ):
        preflight.need_root("the qemu provider", "bridge and taps")


@pytest.mark.netns
def test_one_way_to_make_a_bridge_repairs_what_it_finds():
    """Fresh: the derived MAC and the host's address. Found with another MAC (made before labctl fixed it)
    or without its address (removed by hand): both put back; a second call changes nothing."""
    br = f"br-lcT{os.getpid() % 100000}"
    try:
        assert links.ensure_bridge(br, "10.239.7.1", 24) == br
        assert Path(f"/sys/class/net/{br}/address").read_text().strip() == lan_mac("10.239.7.1")
        sh.run(["ip", "link", "set", br, "address", "02:00:00:00:00:01"])
        sh.run(["ip", "addr", "flush", "dev", br])
        links.ensure_bridge(br, "10.239.7.1", 24)
        links.ensure_bridge(br, "10.239.7.1", 24)
        assert Path(f"/sys/class/net/{br}/address").read_text().strip() == lan_mac("10.239.7.1")
        addrs = sh.run(["ip", "-4", "-o", "addr", "show", "dev", br]).stdout
        assert addrs.count("inet ") == 1 and " 10.239.7.1/24 " in addrs
        assert "UP" in sh.run(["ip", "-o", "link", "show", br]).stdout
    finally:
        sh.run(["ip", "link", "del", br], check=False)
    assert not Path(f"/sys/class/net/{br}").exists()
