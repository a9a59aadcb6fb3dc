"""provider: qemu with `networks:` and `routers:`, for real: two VMs in two networks joined by one
router, a namespace on the host as the netns provider builds it (labctl/host/routers.py). Traffic between
the networks goes through the router, never the host (its ip_forward stays 0), each VM reaches the
apt proxy on its own network, and `down` leaves nothing.

Runs under the VM lock (flock /tmp/labctl-qemu.lock): LANs 10.192.1.0/24 and 10.192.2.0/24, lab
names starting with qr."""

import base64
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import labctl
from conftest import qemu_residue as residue
from labctl.plan import names


def racks(tmp_path: Path, name: str, tor: bool = False, **extra) -> Path:
    """tor: each network's AS and the router's (it runs BIRD), `calico.bgp: tor` (Calico's AS per rack)."""
    d = {
        "name": name,
        "provider": "qemu",
        "networks": {
            "rack-a": {"lan": "10.192.1.0/24", "gateway": "10.192.1.254"} | ({"asn": 65001} if tor else {}),
            "rack-b": {"lan": "10.192.2.0/24", "gateway": "10.192.2.254"} | ({"asn": 65002} if tor else {}),
        },
        "routers": {
            "core": {"interfaces": {"rack-a": "10.192.1.254", "rack-b": "10.192.2.254"}}
            | ({"asn": 65000} if tor else {})
        },
        **({"calico": {"bgp": "tor"}} if tor else {}),
        "defaults": {"interface": "lan0"},
        "qemu": {"control_plane": {"cpus": 1, "memory": 1024}, "worker": {"cpus": 1, "memory": 1024}},
        "nodes": {
            f"{name}-cp": {"role": "control-plane", "network": "rack-a", "address": "10.192.1.11"},
            f"{name}-w1": {"role": "worker", "network": "rack-b", "address": "10.192.2.11"},
        },
    } | extra
    p = tmp_path / f"{name}.yml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


# ping for a VM without ping (the image is minbase): ICMP echo over a raw socket, prints each reply's TTL
PING = """
import os, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(10)
ident = os.getpid() & 0xFFFF
for seq in range(3):
    msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"labctl"
    total = sum(struct.unpack("!%dH" % (len(msg) // 2), msg))
    total = (total >> 16) + (total & 0xFFFF)
    msg = msg[:2] + struct.pack("!H", ~(total + (total >> 16)) & 0xFFFF) + msg[4:]
    s.sendto(msg, (sys.argv[1], 0))
    while True:
        pkt = s.recv(1500)
        hl = (pkt[0] & 15) * 4
        kind, _, _, i, q = struct.unpack("!BBHHH", pkt[hl : hl + 8])
        if kind == 0 and (i, q) == (ident, seq):
            print("ttl=%d" % pkt[8])
            break
"""


def router_forwarded(ns: str) -> int:
    """Packets the router took in on its rack-a NIC."""
    link = json.loads(subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", "rack-a"], capture_output=True,
                                     text=True, check=True).stdout)[0]  # fmt: skip
    return link["stats64"]["rx"]["packets"]


@pytest.mark.netns
def test_a_qemu_lab_takes_networks_and_routers(tmp_path, qhome):
    """Validation accepts them for qemu; each network gets its own bridge, the VMs their gateway."""
    from labctl.plan.model import LabModel
    from labctl.providers.qemu import machine

    t = racks(tmp_path, "qrval")
    p = labctl("validate", "-t", t, home=qhome)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "lab"
    labctl("render", "-t", t, "-o", out, home=qhome, check=True)
    data = json.loads((out / "topology-data.json").read_text())
    bridges = {n: x["bridge"] for n, x in data["networks"].items()}
    assert bridges == {n: names.bridge("lq", "qrval", n) for n in ("rack-a", "rack-b")}
    w1 = next(n for n in data["nodes"] if n["name"] == "qrval-w1")
    assert w1["ssh"]["bridge"] == bridges["rack-b"]  # SSH checks its route leaves through rack-b's bridge
    model = LabModel.load(out / "topology-data.json")
    assert machine.lan(model, model.node("qrval-w1")) == (24, "10.192.2.254", "10.192.2.253")


@pytest.mark.netns
def test_a_qemu_tor_router_gets_a_bird_config_and_a_root_login(tmp_path, qhome):
    """bgp: tor on qemu: the router labctl builds on this host gets BIRD's config (one eBGP session per node of its
    networks, in the node's network AS, from its own address there) and, like a netns router, its own sshd's
    root login with the lab key, whatever the VMs' login is."""
    t = racks(tmp_path, "qrval", tor=True)
    p = labctl("validate", "-t", t, home=qhome)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "lab"
    labctl("render", "-t", t, "-o", out, home=qhome, check=True)
    conf = (out / "bird" / "core.conf").read_text()
    sessions = re.findall(r"local (\S+) as (\d+);\s+neighbor (\S+) as (\d+);", conf)
    assert sorted(sessions) == [("10.192.1.254", "65000", "10.192.1.11", "65001"),
                                ("10.192.2.254", "65000", "10.192.2.11", "65002")]  # fmt: skip
    data = json.loads((out / "topology-data.json").read_text())
    core = data["routers"][0]
    assert core["ssh"]["user"] == "root" and core["ssh"]["key"] == str(out / "ssh" / "id_ed25519")
    assert {n["ssh"]["user"] for n in data["nodes"]} == {"labctl"}
    assert "Host 10.192.1.254\n  User root\n" in (out / "ssh" / "ssh_config").read_text()


def bird_pid(home: Path) -> int:
    return int((home / "qracks" / "nodes" / "core" / "bird.pid").read_text())


@pytest.mark.qemu
def test_two_vms_in_two_networks_talk_through_the_router_and_down_leaves_nothing(tmp_path, qhome):
    """Also ToR peering (`calico.bgp: tor`): the router runs BIRD in its namespace with one eBGP session per VM,
    and `labctl bgp`, `inspect` and `exec` reach it. The sessions stay down: the VMs run no Calico here (only
    labctl's bootstrap runs, `--tags never`); the router's side is what is checked."""
    from labctl.host.hostside import alive, cmdline

    t = racks(tmp_path, "qracks", tor=True)
    ns = names.netns("lq", "qracks", "core")
    pid = None
    try:
        p = labctl("up", "-t", t, "--tags", "never", home=qhome, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        # BIRD runs in the router's namespace, on the config rendered for it
        pid = bird_pid(qhome)
        assert alive(pid) and f"{qhome}/qracks/nodes/core/bird.conf" in cmdline(pid)
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
        conf = (qhome / "qracks" / "nodes" / "core" / "bird.conf").read_text()
        assert sorted(re.findall(r"neighbor (\S+) as (\d+);", conf)) == [("10.192.1.11", "65001"),
                                                                            ("10.192.2.11", "65002")]  # fmt: skip
        # `labctl bgp core` reads it over the router's own sshd: BIRD answers with both sessions configured
        rows = json.loads(labctl("bgp", "-n", "qracks", "core", "-f", "json", home=qhome, check=True).stdout)
        assert [r["node"] for r in rows] == ["core"] and rows[0]["error"] == ""
        got = {s["name"]: (s["peer_address"], s["peer_node"]) for s in rows[0]["sessions"]}
        assert got == {
            "Node_10_192_1_11": ("10.192.1.11", "qracks-cp"),
            "Node_10_192_2_11": ("10.192.2.11", "qracks-w1"),
        }
        rows = json.loads(labctl("inspect", "-n", "qracks", "-f", "json", home=qhome).stdout)
        core = next(r for r in rows if r["name"] == "core")
        assert core["state"] == "running" and core["error"] == "", core
        assert core["bgp"]["expected"] == 2
        assert {x["name"] for x in core["bgp"]["peers"]} == {"Node_10_192_1_11", "Node_10_192_2_11"}
        r = labctl("exec", "-n", "qracks", "core", "--", "hostname", home=qhome, check=True)
        assert r.stdout.strip() == "core"
        # a second up leaves the running BIRD alone (same config: nothing to reload)
        p = labctl("up", "-t", t, "--tags", "never", home=qhome, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        assert bird_pid(qhome) == pid and alive(pid)
        # the host reaches each VM over its own network's bridge (SSH), and routes for neither
        r = labctl("exec", "-n", "qracks", "qracks-w1", "--", "hostname", home=qhome, check=True)
        assert r.stdout.strip() == "qracks-w1"

        def on_cp(cmd: str) -> str:
            return labctl("exec", "-n", "qracks", "qracks-cp", "--", "sh", "-c", cmd, home=qhome, check=True).stdout

        assert "via 10.192.1.254 dev lan0" in on_cp("ip route get 10.192.2.11")
        before = router_forwarded(ns)
        code = base64.b64encode(PING.encode()).decode()
        out = on_cp(f"echo {code} | base64 -d | sudo python3 - 10.192.2.11")
        # one hop: the reply left w1 with TTL 64 and the router took one off
        assert re.findall(r"ttl=(\d+)", out) == ["63", "63", "63"], out
        assert router_forwarded(ns) - before >= 3  # the echo requests went through the router's rack-a NIC
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
        # the router forwards in its own namespace only
        fwd = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        assert fwd.strip() == "1"
        # each VM's proxy is the host's address on its own network, not one behind the router
        hosts = labctl("exec", "-n", "qracks", "qracks-w1", "--", "getent", "hosts", "labctl-proxy", home=qhome)
        assert hosts.stdout.split()[0] == "10.192.2.253", hosts.stdout
        got = labctl("exec", "-n", "qracks", "qracks-w1", "--", "bash", "-c",
                     "exec 3<>/dev/tcp/labctl-proxy/3143 && echo open", home=qhome)  # fmt: skip
        assert got.stdout.strip() == "open", got.stdout + got.stderr
    finally:
        d = labctl("down", "-t", t, home=qhome, timeout=600)
    assert d.returncode == 0, d.stderr
    assert pid is not None and not alive(pid)  # the router's BIRD went with the lab
    assert residue(qhome, "qracks") == []
