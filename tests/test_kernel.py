"""The kernel tier: the article's own dataplane, on a kernel that has ipip and sch_netem.

This host's kernel (and CI's) has neither, so the netns tests run the VXLAN fallback and refuse
netem. Here labctl boots ONE VM (provider qemu, tests/kernel-vm.yml, the debian-12-netns image:
Debian 12's kernel, bird2, tcpdump, python3-venv baked in), installs the wheel the test builds into a
venv in it (Python deps from a wheelhouse made here: no internet in the VM), and then, over SSH as
the VM's sudo user, does what a new user would: `labctl up` of the built-in seed lab, inspect,
verify, trace, capture, impair, down. Then a second case, IPIPCrossSubnet over two racks. The
module's tests share the VM and run in order. Runs under the VM lock (flock /tmp/lc-qemu.lock)."""

import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import QEMU_IMAGES, ROOT, labctl
from conftest import qemu_residue as residue

pytestmark = pytest.mark.kernel
TOPOLOGY = ROOT / "tests" / "kernel-vm.yml"
NAME = "qkern"
ADDR = "10.209.0.11"
LC = "sudo NO_COLOR=1 /home/labctl/venv/bin/labctl"  # root in the VM, as the README's quick start
POD_A = "lc-seed.k8s-worker-1.pod-a"


class Guest:
    def __init__(self, home: Path):
        self.home = home
        self.config = home / NAME / "ssh" / "ssh_config"

    def ssh(self, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`script` run by sh in the VM as the lab user (sudo where it says so)."""
        argv = ["ssh", "-F", str(self.config), ADDR, "sh -c " + shlex.quote(script)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def ok(self, script: str, timeout: float = 300) -> str:
        p = self.ssh(script, timeout)
        assert p.returncode == 0, f"{script} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p.stdout

    def put(self, *paths: Path, timeout: float = 300) -> None:
        argv = ["scp", "-q", "-r", "-F", str(self.config), *map(str, paths), f"{ADDR}:"]
        subprocess.run(argv, check=True, capture_output=True, timeout=timeout)

    def rtt(self, count: int = 5) -> dict:
        """pod-a -> pod-b (worker-1 -> worker-2, through the tunnel): ping's loss % and min/avg ms."""
        out = self.ssh(f"sudo ip netns exec {POD_A} ping -n -q -c {count} -i 0.2 -W 1 192.168.2.2").stdout
        loss = float(re.search(r"([\d.]+)% packet loss", out).group(1))
        m = re.search(r"= ([\d.]+)/([\d.]+)/", out)
        return {"loss": loss, "min": float(m.group(1)) if m else None, "avg": float(m.group(2)) if m else None}

    def snapshot(self) -> dict:
        """What a netns lab in the VM could leave there."""
        out = self.ok(
            "ip netns list; echo ==; ip -o link | awk -F': ' '{print $2}' | cut -d@ -f1; echo ==;"
            " ip -4 route show table all; echo ==; ps -eo args= | grep -E '[/]var/lib/labctl|^(/usr/s?bin/)?(bird|tcpdump) ';"
            " echo ==; sudo ls /var/lib/labctl 2>/dev/null; true"
        )
        return dict(
            zip(
                ("netns", "links", "routes", "procs", "labs"),
                (set(x.split("\n")) for x in out.split("==\n")),
                strict=True,
            )
        )


@pytest.fixture(scope="module")
def wheelhouse():
    """The wheel of this tree, and its dependencies for the VM's Python (Debian 12: CPython 3.11, glibc
    2.36) at the versions installed here, which the rest of the suite tested."""
    d = Path(tempfile.mkdtemp(prefix="lckwh"))
    pip = [sys.executable, "-m", "pip"]
    freeze = subprocess.run([*pip, "freeze", "--all", "--exclude-editable"], capture_output=True, text=True, check=True)
    pins = d / "constraints.txt"
    pins.write_text("\n".join(x for x in freeze.stdout.splitlines() if "==" in x) + "\n")
    wheels = d / "wheels"
    run = lambda *a: subprocess.run([*pip, *a], check=True, capture_output=True, timeout=600)  # noqa: E731
    run("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT))
    [whl] = wheels.glob("labctl-*.whl")
    glibc = [f"--platform=manylinux_2_{v}_x86_64" for v in (34, 28, 17)]
    run(
        "download",
        "-q",
        "-d",
        str(wheels),
        "-c",
        str(pins),
        "--only-binary=:all:",
        "--python-version=3.11",
        *glibc,
        str(whl),
        "pip",
    )
    yield wheels
    subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture(scope="module")
def guest(wheelhouse):
    """One VM with labctl installed in it (as its docs say: a venv, pip install of the wheel)."""
    QEMU_IMAGES.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="lck", dir="/tmp"))
    env = {"LABCTL_IMAGES": str(QEMU_IMAGES)}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        labctl("image", "build", "debian-12-netns", home=home, check=True, timeout=900)
        t0 = time.monotonic()
        up = labctl("up", "-t", TOPOLOGY, "--tags", "never", home=home, timeout=900)
        assert up.returncode == 0, up.stderr[-3000:]
        print(f"VM up in {time.monotonic() - t0:.0f} s")
        g = Guest(home)
        t0 = time.monotonic()
        g.put(wheelhouse, ROOT / "inventories" / "two-racks" / "topology.yml")
        # pip from the wheelhouse (not ensurepip's install of it), and no byte-compiling of all of ansible: each
        # costs minutes under TCG; Python compiles what labctl imports when it first runs
        pip = 'venv/bin/python "$1/pip" install -q --no-compile --no-index --find-links wheels'
        g.ok(f"set -- wheels/pip-*.whl && python3 -m venv --without-pip venv && {pip} labctl", timeout=900)
        print(f"labctl installed in the VM in {time.monotonic() - t0:.0f} s")
        yield g
    finally:
        d = labctl("down", "-t", TOPOLOGY, home=home, timeout=600)
        left = residue(home, NAME)
        subprocess.run(["rm", "-rf", str(home)], check=False)
        mp.undo()
        assert d.returncode == 0, d.stderr
        assert left == []  # nothing of the VM on this host: no QEMU, proxy, tap, bridge, lab dir


@pytest.fixture(scope="module")
def before(guest):
    """What the VM has before any lab (its modules loaded: ipip adds its fallback tunl0 to every netns)."""
    guest.ok("sudo modprobe ipip && sudo modprobe sch_netem")
    return guest.snapshot()


@pytest.fixture(scope="module")
def seed(guest, before):
    """The built-in seed lab, up in the VM."""
    t0 = time.monotonic()
    out = guest.ok(f"{LC} up 2>&1", timeout=900)
    print(f"labctl up (seed) in the VM in {time.monotonic() - t0:.0f} s")
    assert "tunnel tunl0" in out and "no ipip" not in out, out


def test_guest_kernel_has_ipip_and_netem(guest):
    out = guest.ok("sudo modprobe -v ipip; sudo modprobe -v sch_netem; ls -d /sys/module/ipip /sys/module/sch_netem")
    assert "/sys/module/ipip" in out and "/sys/module/sch_netem" in out, out


def test_seed_has_the_articles_tunl0_and_bird_routes(guest, seed):
    nodes = {n["name"]: n for n in json.loads(guest.ok(f"{LC} inspect -f json"))}
    print(guest.ok(f"{LC} inspect"))
    want = {"k8s-master": "192.168.0.1", "k8s-worker-1": "192.168.1.1", "k8s-worker-2": "192.168.2.1"}
    assert {n: (v["tunnel_device"], v["tunnel_ip"]) for n, v in nodes.items()} == {
        n: ("tunl0", ip) for n, ip in want.items()
    }, nodes
    routes = guest.ok(f"{LC} exec k8s-master -- ip -4 route")
    print(routes)
    for block, via in (("192.168.1.0/24", "10.12.22.2"), ("192.168.2.0/24", "10.12.22.3")):
        assert re.search(rf"^{block} via {via} dev tunl0 proto bird .*onlink", routes, re.M), routes
    assert "vxlan.calico" not in routes
    addr = guest.ok(f"{LC} exec k8s-worker-2 -- ip -4 -o addr show dev tunl0")
    assert "inet 192.168.2.1/32" in addr, addr


def test_verify_passes(guest, seed):
    p = guest.ssh(f"{LC} verify", timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAIL" not in p.stdout and "PASS" in p.stdout, p.stdout


def test_trace_goes_through_ipip(guest, seed):
    out = guest.ok(f"{LC} trace pod-a pod-b", timeout=300)
    assert "via 10.12.22.3 dev tunl0 proto bird" in out, out
    assert "IPIP" in out and "emulated" not in out, out
    assert re.search(r"ping from pod-a: ok \(\d+ packets transmitted, \d+ received, 0% packet loss", out), out


def test_capture_decodes_ip_in_ip(guest, seed):
    # the capture runs until it has 4 packets; pings go on meanwhile (labctl's start costs seconds here)
    script = (
        f"{LC} capture k8s-worker-1 -c 4 --filter 'ip proto 4' > cap.txt 2>cap.err & c=$!;"
        f" for i in $(seq 60); do kill -0 $c 2>/dev/null || break;"
        f" sudo ip netns exec {POD_A} ping -n -q -c 1 -W 1 192.168.2.2 >/dev/null; done; wait $c; rc=$?;"
        " cat cap.txt; cat cap.err >&2; exit $rc"
    )
    out = guest.ok(script, timeout=300)
    lines = out.strip().splitlines()
    print("\n".join(lines))
    assert len(lines) == 4, out
    req = "10.12.22.2 > 10.12.22.3 IPIP | inner 192.168.1.2 > 192.168.2.2 ICMP echo request"
    rep = "10.12.22.3 > 10.12.22.2 IPIP | inner 192.168.2.2 > 192.168.1.2 ICMP echo reply"
    assert any(req in x for x in lines) and any(rep in x for x in lines), out


def test_impair_delay_shows_in_rtt_and_clears(guest, seed):
    base = guest.rtt()
    assert base["loss"] == 0, base
    guest.ok(f"{LC} impair k8s-worker-2 --delay 100ms")
    slow = guest.rtt()
    qdisc = guest.ok(f"{LC} exec k8s-worker-2 -- tc qdisc show dev ens192")
    guest.ok(f"{LC} impair k8s-worker-2 --clear")
    after = guest.rtt()
    print(f"pod-a -> pod-b rtt: {base} -> delay 100ms: {slow} -> cleared: {after}")
    assert "netem" in qdisc and "delay 100ms" in qdisc, qdisc
    assert slow["loss"] == 0 and slow["min"] >= base["min"] + 95, (base, slow)
    assert after["loss"] == 0 and after["min"] < base["min"] + 20, (base, after)


def test_impair_loss_drops_pings_and_clears(guest, seed):
    guest.ok(f"{LC} impair k8s-worker-2 --loss 50%")
    lossy = guest.rtt(count=40)
    t0 = time.monotonic()
    clear = guest.ssh(f"{LC} impair k8s-worker-2 --clear", timeout=180)
    took = time.monotonic() - t0
    after = guest.rtt(count=10)
    print(f"loss 50%: {lossy}; --clear took {took:.0f} s; then {after}")
    # 50% on worker-2's egress: the replies; outside 15-85% of 40 is a ~1e-5 chance
    assert 15 <= lossy["loss"] <= 85, lossy
    assert clear.returncode == 0, clear.stderr  # the node stays reachable for labctl (issue 19)
    assert after["loss"] == 0, after


def test_down_leaves_nothing_in_the_vm(guest, before, seed):
    guest.ok(f"{LC} down", timeout=600)
    assert guest.snapshot() == before


def test_two_racks_ipip_cross_subnet(guest, before):
    """The seed over two racks behind a router (inventories/two-racks): IPIPCrossSubnet keeps a rack
    mate's block native on ens192 and tunnels the other rack's through tunl0."""
    guest.ok(f"{LC} down")  # the seed's LAN is also 10.12.0.0/16 (gone already when the tests above ran)
    try:
        guest.ok(f"{LC} up -t topology.yml 2>&1", timeout=900)
        routes = guest.ok(f"{LC} exec k8s-master -- ip -4 route")
        assert re.search(r"^192\.168\.1\.0/24 via 10\.12\.1\.2 dev ens192 proto bird", routes, re.M), routes
        assert re.search(r"^192\.168\.2\.0/24 via 10\.12\.2\.3 dev tunl0 proto bird .*onlink", routes, re.M), routes
        v = guest.ssh(f"{LC} verify", timeout=600)
        assert v.returncode == 0, v.stdout + v.stderr
    finally:
        guest.ssh(f"{LC} down -t topology.yml", timeout=600)
    assert guest.snapshot() == before
