"""A qemu lab's network on real VMs (issue 21 items 1, 2, 6, 11): a default route via the host that
covers the service VIP and still takes nothing off the host; the lab's resolver (dnsmasq on the
gateway) answering the lab's names, with nothing forwarded upstream when qemu.internet is false;
bridged VM-to-VM traffic passing where br_netfilter sends it through a FORWARD chain that drops.

One lab of two VMs (TCG here), booted once for the module under the VM lock (flock /tmp/lc-qemu.lock),
in the host's real network namespace: LAN 10.247.21.0/24, lab name qnet. The probes never leave the
host: 198.51.100.1 is TEST-NET-2, and the host does not forward."""

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import QEMU_IMAGES, labctl
from conftest import qemu_residue as residue
from labctl.plan import names

pytestmark = pytest.mark.qemu  # root, bridges, taps and VMs
NAME = "qnet"
LAN = "10.247.21"
GATEWAY = f"{LAN}.254"
NODES = {f"{NAME}-cp": f"{LAN}.11", f"{NAME}-w1": f"{LAN}.12"}
PROBE = "198.51.100.1"  # TEST-NET-2: documentation only, never routed anywhere

# a DNS client for the VMs (the image has python3, no dig): asks the first nameserver of
# /etc/resolv.conf for each name's A record; prints "name server rcode address"
DNS_CLIENT = r"""
import random, socket, struct, sys
server = next(l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver"))
for name in sys.argv[1:]:
    q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, (server, 53))
    r = s.recv(1500)
    answers = struct.unpack(">H", r[6:8])[0]
    print(name, server, r[3] & 15, socket.inet_ntoa(r[-4:]) if answers else "-")
"""


def uplink() -> str:
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route"], capture_output=True, text=True).stdout)
    return next(r["dev"] for r in routes if r.get("dst") == "default")


def docker_like_drop(br: str) -> list[str]:
    """What Docker's FORWARD policy DROP does to a bridge's frames, scoped to this lab's bridge only."""
    return ["FORWARD", "-i", br, "-o", br, "-m", "comment", "--comment", "labctl test: docker-like drop", "-j", "DROP"]


@pytest.fixture(scope="module")
def lab():

    home = Path(tempfile.mkdtemp(prefix="lc", dir="/tmp"))
    saved = os.environ.get("LABCTL_IMAGES")
    QEMU_IMAGES.mkdir(parents=True, exist_ok=True)
    os.environ["LABCTL_IMAGES"] = str(QEMU_IMAGES)
    topo = home / "qnet.yml"
    topo.write_text(
        yaml.safe_dump(
            {
                "name": NAME,
                "provider": "qemu",
                "network": {"lan": f"{LAN}.0/24"},
                "kubernetes": {"version": "1.34", "service_subnet": "10.96.0.0/12"},
                "defaults": {"interface": "lan0"},
                "qemu": {"control_plane": {"cpus": 1, "memory": 1024}, "worker": {"cpus": 1, "memory": 1024}},
                "nodes": {
                    n: {"role": "control-plane" if n.endswith("-cp") else "worker", "address": a}
                    for n, a in NODES.items()
                },
            },
            sort_keys=False,
        )
    )
    br = names.bridge("lq", NAME)
    drop = docker_like_drop(br)
    subprocess.run(["iptables", "-w", "5", "-A", *drop], check=True)
    try:
        up = labctl("up", "-t", topo, "--tags", "never", home=home, timeout=1500)
        yield {"home": home, "topo": topo, "bridge": br, "up": up}
    finally:
        down = labctl("down", "-t", topo, home=home, timeout=600)
        subprocess.run(["iptables", "-w", "5", "-D", *drop], check=False)
        rules = subprocess.run(["iptables", "-w", "5", "-S", "FORWARD"], capture_output=True, text=True).stdout
        left = residue(home, NAME) + [r for r in rules.splitlines() if br in r]
        shutil.rmtree(home, ignore_errors=True)
        if saved is None:
            os.environ.pop("LABCTL_IMAGES", None)
        else:
            os.environ["LABCTL_IMAGES"] = saved
        assert down.returncode == 0, down.stderr
        assert left == [], left  # incl. labctl's FORWARD rule for the bridge


def run_on(lab, node: str, *argv: str) -> subprocess.CompletedProcess:
    assert lab["up"].returncode == 0, lab["up"].stderr[-3000:]
    return labctl("exec", "-n", NAME, node, "--", *argv, home=lab["home"], timeout=120)


def python_on(lab, node: str, code: str, *args: str) -> subprocess.CompletedProcess:
    return run_on(lab, node, "python3", "-c", code, *args)


class Capture:
    """tcpdump on a host interface (not promiscuous, a tight filter) while the block runs; .lines after."""

    def __init__(self, iface: str, bpf: str):
        self.argv = ["tcpdump", "-p", "-n", "-l", "-i", iface, bpf]

    def __enter__(self):
        self.p = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        fd = self.p.stderr.fileno()
        os.set_blocking(fd, False)
        seen, deadline = b"", time.monotonic() + 10
        while b"listening on" not in seen and time.monotonic() < deadline and self.p.poll() is None:
            try:
                seen += os.read(fd, 4096)
            except BlockingIOError:
                time.sleep(0.05)
        assert b"listening on" in seen, seen
        return self

    def __exit__(self, *exc):
        time.sleep(1)  # the last packets reach the capture
        self.p.terminate()
        out, _ = self.p.communicate(timeout=10)
        self.lines = [x for x in out.splitlines() if x.strip()]


def test_every_vm_routes_the_service_vip_and_nothing_leaves_the_host(lab):
    """Item 1: `ip route get` of the first service IP succeeds on every VM (via the host's address on
    the bridge). A datagram a VM sends off the lab reaches the host's bridge and is not seen on its uplink."""
    for node in NODES:
        r = run_on(lab, node, "ip", "route", "get", "10.96.0.1")
        assert r.returncode == 0, (node, r.stderr)
        assert f"via {GATEWAY} dev lan0" in r.stdout, (node, r.stdout)
    send = f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'labctl-probe', ('{PROBE}', 9)) for _ in range(3)]"
    with Capture(uplink(), f"host {PROBE}") as out, Capture(lab["bridge"], f"host {PROBE}") as on_lan:
        for node in NODES:
            r = python_on(lab, node, send)
            assert r.returncode == 0, (node, r.stderr)
    assert len(on_lan.lines) >= 3 * len(NODES), on_lan.lines  # the VMs really sent them, to the host
    assert out.lines == [], out.lines
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"


def test_every_vm_resolves_the_lab_names_through_the_lab_resolver_and_nothing_goes_upstream(lab):
    """Item 2: each VM's resolv.conf names dnsmasq on the gateway, which answers every node name and
    the proxy's; a name outside the lab is refused there (qemu.internet is false), and no query for
    it is seen on the host's uplink."""
    names = [*NODES, "labctl-proxy"]
    want = {**NODES, "labctl-proxy": GATEWAY}
    outside = f"lc{secrets.token_hex(6)}.example.com"
    with Capture(uplink(), "port 53") as out:
        for node in NODES:
            r = python_on(lab, node, DNS_CLIENT, *names, outside)
            assert r.returncode == 0, (node, r.stderr)
            got = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()}
            for n in names:
                assert got[n] == [GATEWAY, "0", want[n]], (node, n, got)
            assert got[outside][1] != "0" and got[outside][2] == "-", (node, got)  # no answer made up
    assert not any(outside.split(".")[0] in line for line in out.lines), out.lines


def test_vms_reach_each_other_where_forward_drops_bridged_frames(lab):
    """Item 6: this host's kernel sends bridged frames through iptables (bridge-nf-call-iptables=1;
    br_netfilter is built in, no module to load) and the fixture added a FORWARD rule that drops this
    lab's bridged frames, as Docker's DROP policy would. labctl's own ACCEPT rule for the bridge comes
    first, so one VM reaches the other's sshd across the bridge; `down` removes it (fixture)."""
    assert Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1"
    rules = subprocess.run(["iptables", "-w", "5", "-S", "FORWARD"], capture_output=True, text=True).stdout
    ours = [r for r in rules.splitlines() if lab["bridge"] in r and "ACCEPT" in r]
    assert ours == [
        f'-A FORWARD -i {lab["bridge"]} -o {lab["bridge"]} -m comment --comment "labctl {NAME}" -j ACCEPT'
    ], rules
    cp, w1 = NODES
    connect = f"import socket; print(socket.create_connection(('{NODES[w1]}', 22), timeout=10).recv(4).decode())"
    r = python_on(lab, cp, connect)
    assert r.returncode == 0 and r.stdout.strip() == "SSH-", (r.stdout, r.stderr)


def test_preflight_refuses_vms_that_do_not_fit_in_memory(tmp_path):
    """Item 11: before anything exists, naming the numbers."""
    home = tmp_path / "home"
    avail = next(
        int(x.split()[1]) // 1024
        for x in Path("/proc/meminfo").read_text().splitlines()
        if x.startswith("MemAvailable:")
    )
    big = avail  # two of these cannot fit
    t = tmp_path / "qbig.yml"
    t.write_text(
        yaml.safe_dump(
            {
                "name": "qbig",
                "provider": "qemu",
                "network": {"lan": "10.247.22.0/24"},
                "qemu": {"control_plane": {"cpus": 1, "memory": big}, "worker": {"cpus": 1, "memory": 1024}},
                "nodes": {
                    "qbig-cp": {"role": "control-plane", "address": "10.247.22.11"},
                    "qbig-w1": {"role": "worker", "address": "10.247.22.12"},
                },
            }
        )
    )
    p = labctl("up", "-t", t, home=home)
    assert p.returncode == 1, p.stderr
    assert f"the VMs need {big + 1024 + 128} MiB (qbig-cp {big} MiB, qbig-w1 1024 MiB" in p.stderr, p.stderr
    assert "MiB available" in p.stderr and len(p.stderr.strip().splitlines()) <= 3, p.stderr
    assert residue(home, "qbig") == []


def test_the_config_disk_gives_the_default_route_and_the_lab_resolver(tmp_path):
    """Items 1 and 2 as the VM receives them (read back from the ext4 image with debugfs)."""
    from labctl.providers.qemu import machine

    nd = tmp_path / "node"
    nd.mkdir()
    key = nd / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    node = SimpleNamespace(name="qcfg-cp", address=f"{LAN}.11", interface="lan0", network=None)
    model = SimpleNamespace(
        name="qcfg", network=SimpleNamespace(lan=f"{LAN}.0/24", gateway=GATEWAY), networks=None, nodes=[node]
    )
    img = machine.config_disk(nd, node, model, "ssh-ed25519 AAAA lab\n")

    def read(name):
        return subprocess.run(
            ["debugfs", "-R", f"cat /{name}", str(img)], capture_output=True, text=True, check=True
        ).stdout

    assert f"Gateway={GATEWAY}\n" in read("lab.network")
    assert read("resolv.conf").splitlines()[0] == f"nameserver {GATEWAY}"
    assert machine.lan(model, node) == (24, GATEWAY, GATEWAY)


def test_the_resolver_config_answers_lab_names_on_lab_addresses_only():
    from pathlib import PurePath

    from labctl.providers.qemu import dns

    args = (PurePath("/lab/dns"), ["10.1.0.254", "10.2.0.254"], ["br-a", "br-b"], {"n1": "10.1.0.1", "n2": "10.2.0.1"})
    off = dns.config(*args, False, "labctl-proxy").splitlines()
    assert {"listen-address=10.1.0.254", "listen-address=10.2.0.254", "bind-interfaces", "no-hosts"} <= set(off)
    assert {"host-record=n1,10.1.0.1", "host-record=n2,10.2.0.1", "localise-queries"} <= set(off)
    # the proxy name is the host's address on the bridge the query came in on
    assert {"interface-name=labctl-proxy,br-a/4", "interface-name=labctl-proxy,br-b/4"} <= set(off)
    assert "no-resolv" in off and not any(x.startswith(("server=", "resolv-file=")) for x in off)
    on = dns.config(*args, True, "labctl-proxy").splitlines()
    assert "resolv-file=/etc/resolv.conf" in on and "no-resolv" not in on and "domain-needed" in on
    assert not any(x.startswith(("dhcp-range", "interface=")) for x in on)  # no DHCP, no wildcard socket


def test_preflight_names_a_forward_chain_that_drops_bridged_frames():
    from labctl.providers.qemu import bridgefw

    docker = ["-P FORWARD DROP", "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD"]
    note = bridgefw.warning(docker, ["br-lqabc"])
    assert note and "policy is DROP (Docker sets it)" in note and "br-lqabc" in note
    assert bridgefw.filters(docker) and bridgefw.filters(["-P FORWARD ACCEPT", "-A FORWARD -j X"])
    assert bridgefw.warning(["-P FORWARD ACCEPT"], ["br"]) is None and not bridgefw.filters(["-P FORWARD ACCEPT"])
    assert bridgefw.rule("br-lqabc", "lab")[:5] == ["FORWARD", "-i", "br-lqabc", "-o", "br-lqabc"]
