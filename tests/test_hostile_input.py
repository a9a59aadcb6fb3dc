"""Issue 19, part B, what needs no lab: validation gaps (item 12), one clear line instead of a
traceback (item 13), `capture -w` through a new file (item 14), retries under loss (item 4), the IMPAIR
column of every interface (item 15), help text and the check-name/expect checks (low)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import ROOT, SEED, labctl, write_yaml
from labctl import cli
from labctl.errors import LabctlError, UsageError
from labctl.host import sh
from labctl.live import nodes
from labctl.live.access import RouteError
from labctl.observe import capture as cap
from labctl.providers.qemu import provider as qemu_provider
from labctl.spec import netem

RACKS = ROOT / "inventories" / "two-racks" / "topology.yml"
QEMU = ROOT / "inventories" / "seed-qemu" / "topology.yml"


def seed() -> dict:
    return yaml.safe_load(SEED.read_text())


def one_line(p, code: int, text: str) -> None:
    assert p.returncode == code, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1 and text in p.stderr, p.stderr


# -- item 12: validate refuses, in one line, before anything is built --------------------------------


@pytest.mark.unit
def test_a_network_named_lo_is_refused(tmp_path):
    d = yaml.safe_load(RACKS.read_text())
    d["networks"]["lo"] = d["networks"].pop("rack-b")
    d["routers"]["core"]["interfaces"]["lo"] = d["routers"]["core"]["interfaces"].pop("rack-b")
    d["nodes"]["k8s-worker-2"]["network"] = "lo"
    p = labctl("validate", "-t", write_yaml(tmp_path / "t.yml", d), home=tmp_path)
    one_line(p, 2, "networks.lo: network name 'lo' names a kernel device")


@pytest.mark.unit
def test_tor_with_a_network_asn_equal_to_its_router_asn_is_refused(tmp_path):
    d = yaml.safe_load(RACKS.read_text())
    d["networks"]["rack-b"]["asn"] = d["routers"]["core"]["asn"]
    p = labctl("validate", "-t", write_yaml(tmp_path / "t.yml", d), home=tmp_path)
    one_line(p, 2, "routers.core.asn: 65000 is also network rack-b's asn: its ToR sessions would be iBGP")


@pytest.mark.unit
def test_qemu_memory_beyond_any_lab_vm_is_refused(tmp_path):
    d = yaml.safe_load(QEMU.read_text())
    d["qemu"]["worker"]["memory"] = 1000000000
    p = labctl("validate", "-t", write_yaml(tmp_path / "t.yml", d), home=tmp_path)
    one_line(p, 2, "qemu.worker.memory: 1000000000 MiB is more than a lab VM needs")


@pytest.mark.unit
def test_qemu_memory_beyond_this_host_is_refused_by_validate_as_by_up(tmp_path, monkeypatch):
    from labctl.app.lab import Lab
    from labctl.plan import layout
    from labctl.spec.topology import load

    monkeypatch.setenv("LABCTL_HOME", str(tmp_path))
    monkeypatch.setattr(qemu_provider, "host_memory_mib", lambda: 4096)
    d = yaml.safe_load(QEMU.read_text())
    d["qemu"]["worker"]["memory"] = 8192
    t = load(write_yaml(tmp_path / "t.yml", d))
    with pytest.raises(UsageError, match=r"qemu.worker.memory 8192 MiB is more than this host's memory \(4096 MiB\)"):
        Lab(layout.lab_dir(t.name)).check(t)


@pytest.mark.unit
def test_impairment_on_tunl0_where_ipip_falls_back_to_vxlan_is_refused_before_up(tmp_path, labhome, monkeypatch):
    from labctl.providers.netns.provider import NetnsProvider

    monkeypatch.setattr(NetnsProvider, "ipip_supported", lambda self: False)  # a kernel without ipip
    d = seed()
    d["impairments"] = [{"node": "k8s-worker-1:tunl0", "rate": "10mbit"}]
    t = write_yaml(tmp_path / "t.yml", d)
    for args in (["validate", "-t", t], ["up", "--dry-run", "-t", t]):
        r = CliRunner().invoke(cli.app, [str(a) for a in args], env={"LABCTL_HOME": str(labhome), "NO_COLOR": "1"})
        assert r.exit_code == 2, r.output
        assert "impairments k8s-worker-1:tunl0: this lab's nodes have vxlan.calico, not tunl0" in r.output
    monkeypatch.setattr(NetnsProvider, "ipip_supported", lambda self: True)
    r = CliRunner().invoke(cli.app, ["validate", "-t", str(t)], env={"LABCTL_HOME": str(labhome)})
    assert r.exit_code == 0, r.output


@pytest.mark.unit
def test_a_host_route_overlap_is_found_by_validate_and_dry_run_as_by_up(labhome, monkeypatch):
    """`up` refused it in preflight (exit 1); validate and --dry-run said ok."""
    real = sh.run
    routes = '[{"dst":"10.12.7.0/24","dev":"eth9","protocol":"kernel","scope":"link"}]'

    def fake(argv, **kw):
        if argv[:4] == ["ip", "-j", "-4", "route"]:
            return subprocess.CompletedProcess(argv, 0, routes, "")
        return real(argv, **kw)

    monkeypatch.setattr(sh, "run", fake)
    for args in (["validate", "-t", SEED], ["up", "--dry-run", "-t", SEED]):
        r = CliRunner().invoke(cli.app, [str(a) for a in args], env={"LABCTL_HOME": str(labhome), "NO_COLOR": "1"})
        assert r.exit_code == 1, r.output  # up's exit code for the same refusal (HostError)
        assert "network.lan 10.12.0.0/16 overlaps the host route 10.12.7.0/24 dev eth9" in r.output, r.output


# -- low: checks ------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "check, msg",
    [
        ({"name": "a\tb", "bgp": {"node": "k8s-master", "established": 2}}, "has a tab, newline or control"),
        ({"name": "a\nb", "bgp": {"node": "k8s-master", "established": 2}}, "has a tab, newline or control"),
        (
            {"name": "x", "exec": {"node": "k8s-master", "command": "true"}, "expect": "a", "expect_regex": "a"},
            "expect and expect_regex are both set",
        ),
        ({"name": "x", "exec": {"node": "k8s-master", "command": "true"}, "timeout": 0}, "timeout: 0"),
    ],
)
def test_bad_checks_are_refused(tmp_path, check, msg):
    d = seed()
    d["checks"] = [check]
    p = labctl("validate", "-t", write_yaml(tmp_path / "t.yml", d), home=tmp_path)
    one_line(p, 2, msg)


# -- item 13: one clear line, not a traceback -------------------------------------------------------


@pytest.mark.unit
def test_init_and_render_outputs_that_cannot_be_written(tmp_path):
    one_line(labctl("init", "-o", tmp_path, home=tmp_path), 2, f"-o {tmp_path}: is a directory")
    one_line(labctl("init", "-o", "/nope/x.yml", home=tmp_path), 2, "-o /nope/x.yml: no directory /nope")
    one_line(labctl("render", "-o", "/dev/null", home=tmp_path), 2, "/dev/null is not a directory")


@pytest.mark.unit
@pytest.mark.parametrize(
    "target, msg",
    [
        ("DIR", "is a directory"),
        ("/nonexistent/x", "-w /nonexistent/x: no directory /nonexistent"),
        ("/dev/full", "-w /dev/full: is not a regular file"),
        ("LINK", "is a symbolic link: refusing to write through it"),
    ],
)
def test_capture_write_targets_refused_before_anything(tmp_path, target, msg):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "link.pcap").symlink_to(victim)
    w = {"DIR": str(tmp_path), "LINK": str(tmp_path / "link.pcap")}.get(target, target)
    one_line(labctl("capture", "k8s-master", "-w", w, home=tmp_path), 2, msg)
    assert victim.read_text() == "keep me"


def _python_for_nobody() -> str:
    """A python the unprivileged user may run (this venv's may live under /root): this one if it can,
    else the system's of the same version, with this environment's packages on PYTHONPATH."""
    for exe in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        ok = subprocess.run(NOBODY + [exe, "-c", "pass"], capture_output=True).returncode == 0
        if ok:
            return exe
    raise AssertionError("no python the user nobody can run")


NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.mark.netns
@pytest.mark.parametrize("args", [["list"], ["inspect"], ["up"], ["down"], ["down", "-n", "seed"]])
def test_non_root_against_a_root_owned_home_is_one_line(args):
    if os.geteuid() != 0:
        pytest.fail("this test runs as root (it drops to nobody)")
    home = Path(tempfile.mkdtemp(prefix="lcperm", dir="/tmp"))
    try:
        home.chmod(0o700)
        (home / "seed").mkdir()
        import site

        import labctl

        # the labctl under test first (the checkout's, as `python -m labctl` in it would find)
        path = os.pathsep.join([str(Path(labctl.__file__).parent.parent), *site.getsitepackages()])
        env = {"PATH": os.environ["PATH"], "LABCTL_HOME": str(home), "PYTHONPATH": path, "NO_COLOR": "1"}
        p = subprocess.run(
            NOBODY + [_python_for_nobody(), "-m", "labctl", *args], capture_output=True, text=True, env=env, timeout=60
        )
        one_line(p, 1, "Permission denied (hint: run labctl as root, or set LABCTL_HOME to a directory you own)")
        assert (home / "seed").is_dir()
    finally:
        shutil.rmtree(home)


# -- item 14: the pcap goes to a new file, renamed over the target only once tcpdump sent it ----------


@pytest.mark.unit
def test_pcap_file_keeps_the_old_file_when_nothing_came_and_replaces_it_when_something_did(tmp_path):
    f = tmp_path / "old.pcap"
    f.write_bytes(b"old capture")
    p = cap.PcapFile(str(f))
    p.open()  # tcpdump then fails to start: nothing written
    p.close()
    assert f.read_bytes() == b"old capture" and list(tmp_path.iterdir()) == [f]
    p = cap.PcapFile(str(f))
    p.open()
    assert f.read_bytes() == b"old capture"  # not truncated while tcpdump starts
    p.write(b"\xd4\xc3\xb2\xa1 new")
    p.close()
    assert f.read_bytes() == b"\xd4\xc3\xb2\xa1 new" and list(tmp_path.iterdir()) == [f]
    assert f.stat().st_mode & 0o777 == 0o666 & ~_umask()


@pytest.mark.unit
def test_pcap_file_never_writes_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "x.pcap").symlink_to(victim)
    with pytest.raises(UsageError, match="symbolic link"):
        cap.PcapFile(str(tmp_path / "x.pcap"))
    # a symlink planted while tcpdump runs is replaced, not followed
    p = cap.PcapFile(str(tmp_path / "y.pcap"))
    p.open()
    (tmp_path / "y.pcap").symlink_to(victim)
    p.write(b"pcap")
    p.close()
    assert victim.read_text() == "keep me" and not (tmp_path / "y.pcap").is_symlink()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# -- item 4: SSH paths try again under loss ---------------------------------------------------------


@pytest.mark.unit
def test_retry_tries_longer_timeouts_until_one_connects():
    tried = []

    def connect(t):
        tried.append(t)
        if len(tried) < 3:
            raise LabctlError("ssh k8s-master (10.0.0.1): AuthenticationException: Authentication timeout.")
        return "shell"

    assert nodes.retry(connect, (3.0, 8.0, 20.0)) == "shell" and tried == [3.0, 8.0, 20.0]


@pytest.mark.unit
def test_retry_raises_the_last_failure_and_never_retries_a_refused_route():
    tried = []

    def lossy(t):
        tried.append(t)
        raise LabctlError(f"timeout {t}")

    with pytest.raises(LabctlError, match="timeout 8"):
        nodes.retry(lossy, (3.0, 8.0))
    assert tried == [3.0, 8.0]

    def no_route(t):
        tried.append(t)
        raise RouteError("the host's route goes elsewhere")

    tried.clear()
    with pytest.raises(RouteError):
        nodes.retry(no_route, (3.0, 8.0))
    assert tried == [3.0]


# -- item 15: every interface's impairment, named when it is not the LAN NIC ------------------------


@pytest.mark.unit
def test_describe_all_names_other_interfaces():
    tc = (
        '[{"kind":"tbf","dev":"vxlan.calico","options":{"rate":125000}},'
        '{"kind":"noqueue","dev":"lo","options":{}},'
        '{"kind":"netem","dev":"ens192","options":{"delay":{"delay":0.05}}},'
        '{"kind":"tbf","dev":"lo","options":{"rate":1250000}}]'
    )
    assert netem.describe_all(tc, "ens192") == "delay 50ms; lo: rate 10mbit; vxlan.calico: rate 1mbit"
    assert netem.describe_all('[{"kind":"noqueue","dev":"ens192"}]', "ens192") == ""


# -- low: help text ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_help_has_no_python_types_and_one_line_summaries():
    env = {"COLUMNS": "250", "NO_COLOR": "1"}
    top = _help([], env)
    verify = next(x for x in top.splitlines() if " verify " in x)
    assert "then the topology's own `checks:`; exit 0 only if all pass" in verify, top
    capture = next(x for x in top.splitlines() if " capture " in x)
    assert "Ctrl-C stops it (exit 130) and tcpdump with it" in capture, top
    for args in (["image"], ["exec"], ["up"]):
        text = _help(args, env)
        assert "<bool>" not in text and "list[str]" not in text, text


def _help(args, env) -> str:
    r = CliRunner().invoke(cli.app, [*args, "--help"], env=env, terminal_width=250)
    assert r.exit_code == 0, r.output
    return r.output
