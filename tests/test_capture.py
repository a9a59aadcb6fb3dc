"""labctl capture: the pcap decoder and tcpdump command lines (unit), and real captures on a netns lab."""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import lab_model, labctl, real_lab, renumbered, write_yaml
from labctl.observe import capture as cap
from labctl.observe import tracecap


def ipv4(src: str, dst: str, proto: int, body: bytes) -> bytes:
    total = 20 + len(body)
    return (
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
        + body
    )


def ether(payload: bytes, etype: int = 0x0800) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", etype) + payload


ECHO = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 7) + b"x" * 56


def vxlan_frame() -> bytes:
    inner = ether(ipv4("192.168.1.2", "192.168.2.2", 1, ECHO))
    vx = struct.pack("!BBHI", 0x08, 0, 0, 4096 << 8) + inner
    udp = struct.pack("!HHHH", 40000, 4789, 8 + len(vx), 0) + vx
    return ether(ipv4("10.12.22.2", "10.12.22.3", 17, udp))


def pcap(linktype: int, frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)
    for i, f in enumerate(frames):
        out += struct.pack("<IIII", 1700000000 + i, 5, len(f), len(f)) + f
    return out


@pytest.mark.unit
def test_vxlan_shows_outer_and_inner_headers():
    layers = cap.decode(1, vxlan_frame())
    line = cap.line(layers, 148)
    assert line.startswith(
        "10.12.22.2 > 10.12.22.3 UDP 4789 VNI 4096 | inner 192.168.1.2 > 192.168.2.2 ICMP echo request id 4660 seq 7"
    ), line
    assert [x["src"] for x in layers] == ["10.12.22.2", "192.168.1.2"]


@pytest.mark.unit
def test_ipip_shows_outer_and_inner_headers():
    pkt = ipv4("10.12.22.2", "10.12.22.3", 4, ipv4("192.168.1.2", "192.168.2.2", 1, ECHO))
    for linktype, frame in ((1, ether(pkt)), (101, pkt)):  # on the LAN NIC, and on tunl0 (raw IP)
        line = cap.line(cap.decode(linktype, frame), 104)
        assert line.startswith("10.12.22.2 > 10.12.22.3 IPIP | inner 192.168.1.2 > 192.168.2.2 ICMP echo request"), line
        assert cap.packet(0, linktype, frame, 104)["encap"] == "IPIP"


@pytest.mark.unit
def test_arp_tcp_and_truncated_frames_decode_without_errors():
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x800,
        6,
        4,
        1,
        b"\x02" * 6,
        socket.inet_aton("10.1.0.1"),
        b"\0" * 6,
        socket.inet_aton("10.1.0.2"),
    )
    assert cap.decode(1, ether(arp, 0x0806))[0]["text"] == "ARP who-has 10.1.0.2 tell 10.1.0.1"
    syn = struct.pack("!HHIIBBHHH", 40000, 179, 0, 0, 0x50, 0x02, 0, 0, 0)
    assert cap.decode(1, ether(ipv4("10.1.0.1", "10.1.0.2", 6, syn)))[0]["text"].endswith("40000 > 179 [S] (BGP)")
    assert "truncated" in cap.decode(1, ether(b"\x45\x00"))[0]["text"]


@pytest.mark.unit
def test_pcap_stream_in_arbitrary_chunks():
    data = pcap(1, [vxlan_frame(), vxlan_frame()])
    s, got = cap.PcapStream(), []
    for i in range(0, len(data), 7):  # a network read can split anything anywhere
        got += s.feed(data[i : i + 7])
    assert s.linktype == 1 and len(got) == 2 and got[0][1] == vxlan_frame()


@pytest.mark.unit
def test_command_lines_root_and_sudo():
    pod = {"name": "pod-a", "ip": "192.168.0.2", "veth": "cali1", "netns": "lc-x.n1.pod-a"}
    data = lab_model([{"name": "n1", "interface": "ens192", "pods": [pod]}])
    t = cap.target(data, "n1")
    assert t["iface"] == "ens192" and t["netns"] is None
    start = cap.start_command(t, 5, "udp port 4789")
    assert (
        start
        == "sh -c 'echo $$ >&2; exec tcpdump -i ens192 -n -U --immediate-mode -s 262144 -w - -c 5 '\"'\"'udp port 4789'\"'\"''"
    )
    p = cap.target(data, "pod-a:eth0")
    assert "exec ip netns exec lc-x.n1.pod-a tcpdump -i eth0" in cap.start_command(p, None, None)
    node = lab_model([{"name": "n1", "ssh": {"user": "ubuntu"}}]).nodes[0]
    vm = {"node": node, "netns": None, "iface": "ens3", "label": "n1:ens3"}
    assert cap.start_command(vm, None, None).startswith("sudo -n sh -c ")
    assert "sudo -n kill -TERM 4242" in cap.stop_command(vm["node"], 4242)
    assert "sudo -n tcpdump -d -i ens3 icmp" in cap.check_command(vm, "icmp")
    own = cap.own_ssh_filter("10.1.255.254 51234 10.1.22.1 22")
    assert own == "not (host 10.1.255.254 and tcp port 51234 and tcp port 22)"
    assert cap.combined_filter("icmp or arp", own) == f"(icmp or arp) and {own}"


# -- real captures --------------------------------------------------------------------------------

NAME = "capvx"


@pytest.fixture(scope="module")
def vxlab(tmp_path_factory):
    d = renumbered(NAME, 66)
    d["calico"]["encapsulation"] = "VXLAN"
    t = write_yaml(tmp_path_factory.mktemp("cap") / f"{NAME}.yml", d)
    with real_lab(t) as r:
        yield r.home, t


def tcpdumps_in_lab() -> list[int]:
    pids = []
    for n in ("k8s-master", "k8s-worker-1", "k8s-worker-2"):
        out = subprocess.run(["ip", "netns", "pids", f"lc-{NAME}.{n}"], capture_output=True, text=True).stdout
        for pid in out.split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "tcpdump":
                    pids.append(int(pid))
            except OSError:
                pass
    return pids


def start(home: Path, *args) -> subprocess.Popen:
    env = dict(os.environ, LABCTL_HOME=str(home), NO_COLOR="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "labctl", "capture", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while not tcpdumps_in_lab() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # tcpdump's socket opens right after exec
    return p


def ping_a_to_b(home: Path) -> None:
    labctl(
        "exec",
        "k8s-worker-1",
        "--",
        "ip",
        "netns",
        "exec",
        f"lc-{NAME}.k8s-worker-1.pod-a",
        "ping",
        "-c2",
        "-i0.2",
        "192.168.2.2",
        home=home,
        check=True,
    )


@pytest.mark.netns
def test_single_lan_vxlan_routes_come_from_felix_not_bird(vxlab):
    """As in Calico: with VXLAN, Felix programs the blocks' routes (proto 80); BIRD's kernel filter
    rejects VXLAN pools, on one LAN as behind routers."""
    home, _ = vxlab
    routes = labctl("exec", "k8s-worker-1", "--", "ip", "-4", "route", home=home, check=True).stdout
    assert "192.168.2.0/24 via 192.168.2.1 dev vxlan.calico proto 80 onlink" in routes, routes
    assert "blackhole 192.168.1.0/24 proto 80" in routes and "proto bird" not in routes, routes


@pytest.mark.netns
def test_capture_cross_node_ping_decodes_vxlan_and_writes_pcap(vxlab, tmp_path):
    home, _ = vxlab
    f = tmp_path / "a.pcap"
    p = start(home, "k8s-worker-1", "-c", "4", "--filter", "udp port 4789", "-w", f)
    ping_a_to_b(home)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4, out
    assert " 10.66.22.2 > 10.66.22.3 UDP 4789 VNI 4096 | inner 192.168.1.2 > 192.168.2.2 ICMP echo request" in lines[0]
    assert any(
        "10.66.22.3 > 10.66.22.2 UDP 4789 VNI 4096 | inner 192.168.2.2 > 192.168.1.2 ICMP echo reply" in x
        for x in lines
    )
    # the file is a pcap other tools read: tcpdump itself decodes the same VXLAN packets from it
    r = subprocess.run(["tcpdump", "-nr", str(f)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("vni 4096") == 4, r.stdout + r.stderr
    assert tcpdumps_in_lab() == []


@pytest.mark.netns
def test_capture_pod_pcap_to_stdout(vxlab):
    home, _ = vxlab
    env = dict(os.environ, LABCTL_HOME=str(home), NO_COLOR="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "labctl", "capture", "pod-b", "-c", "2", "--filter", "icmp", "-w", "-"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while not tcpdumps_in_lab() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    ping_a_to_b(home)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    s = cap.PcapStream()
    pkts = s.feed(out)
    assert len(pkts) == 2 and s.linktype == 1
    assert b"192.168.1.2 > 192.168.2.2 ICMP echo request" in err  # decoded lines go to stderr


@pytest.mark.netns
def test_ctrl_c_exits_130_and_kills_tcpdump(vxlab):
    home, _ = vxlab
    p = start(home, "k8s-master")
    pids = tcpdumps_in_lab()
    assert len(pids) == 1
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130, err
    assert "labctl: interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 5
    while tcpdumps_in_lab() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tcpdumps_in_lab() == []


@pytest.mark.netns
@pytest.mark.parametrize(
    "args, msg",
    [
        (["nonode"], "no node or workload 'nonode' in lab capvx"),
        (["k8s-master:nope0"], "no interface 'nope0' on k8s-master"),
        (["k8s-master", "--filter", "udp port"], "tcpdump rejects the filter 'udp port'"),
        (["k8s-master", "-c", "0"], "--count 0: must be at least 1"),
        (["k8s-master", "--duration", "-1"], "--duration -1.0"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_started(vxlab, args, msg):
    home, _ = vxlab
    p = labctl("capture", *args, home=home, timeout=30)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and msg in p.stderr, p.stderr
    assert tcpdumps_in_lab() == []


@pytest.mark.unit
def test_trace_capture_points_per_hop():
    pod = {"name": "pod-a", "ip": "192.168.0.2", "netns": "ns-a", "veth": "cali1"}
    data = lab_model([{"name": "w1", "interface": "ens192", "pods": [pod]}], calico={"tunnel_device": "vxlan.calico"})
    hops = [
        {"at": "pod-a", "kind": "pod", "get": {"dev": "eth0"}},
        {"at": "w1", "kind": "veth", "device": "cali1"},
        {"at": "w1", "kind": "route", "get": {"dev": "vxlan.calico"}},
        {"at": "w1", "kind": "encap"},
        {"at": "w1", "kind": "lan"},
        {"at": "w1", "kind": "decap"},
        {"at": "w1", "kind": "arrive", "get": {"dev": "lo"}},
    ]
    got = [(p["netns"], p["iface"]) if p else None for p in tracecap.points(data, {"hops": hops})]
    assert got == [
        ("ns-a", "eth0"),
        (None, "cali1"),
        (None, "vxlan.calico"),
        None,
        (None, "ens192"),
        (None, "vxlan.calico"),
        None,
    ]


@pytest.mark.netns
def test_trace_capture_shows_the_packet_at_every_hop(vxlab):
    home, _ = vxlab
    p = labctl("trace", "pod-a", "pod-b", "--capture", "-f", "json", home=home, timeout=60)
    assert p.returncode == 0, p.stderr
    hops = json.loads(p.stdout)["hops"]
    captured = [h for h in hops if h["capture"]]
    assert len(captured) >= 6, hops
    for h in captured:
        assert h["seen"], h  # every interface the trace names saw the echo request
        assert "192.168.1.2 > 192.168.2.2 ICMP echo request" in h["seen"]["line"]
    lan = next(h for h in hops if h["capture"] == "k8s-worker-1:ens192")
    assert lan["seen"]["encap"] == "VXLAN" and lan["seen"]["line"].startswith(
        "10.66.22.2 > 10.66.22.3 UDP 4789 VNI 4096 | inner"
    )
    text = labctl("trace", "pod-a", "pod-b", "--capture", home=home, timeout=60).stdout
    assert "      seen on pod-b:eth0: 192.168.1.2 > 192.168.2.2 ICMP echo request" in text, text
    assert tcpdumps_in_lab() == []
