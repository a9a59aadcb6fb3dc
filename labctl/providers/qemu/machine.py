"""The machines of a qemu lab and their host side: one bridge per lab whose host address is the
LAN gateway (as the netns provider's), one tap per VM on it, a qcow2 overlay per node on the
cached base image, a config disk per node (see image.py), and QEMU itself, daemonized with a
pidfile. The host never forwards: ip_forward stays as it is and no NAT rule is added."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import select
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml

from labctl.errors import HostError
from labctl.host import routers as lab_routers
from labctl.host import sh
from labctl.host.hostside import alive, cmdline, link_exists, read_pid, terminate
from labctl.plan import layout, names
from labctl.plan.model import LabModel, Node, Router
from labctl.providers.qemu import image, proxy

QEMU = "qemu-system-x86_64"
TOOLS = (QEMU, "qemu-img", "mkfs.ext4", "ssh-keygen", "ip")
SEED_TOOL = "cloud-localds"  # cloud-image-utils: NoCloud seeds for user-supplied cloud images
PROBE_SECONDS = 8.0


def router_veth(lab: str, router: str, network: str) -> str:
    return names.host_link("lq", lab, f"{router}.{network}")  # the host's end of the router's NIC in that network


def lan(model: LabModel, node: Node) -> tuple[int, str | None, str]:
    """(prefix length, default gateway, the host's address) of the node's LAN. A one-LAN lab's default
    route goes to the host's address on the bridge: host-network pods reach the service VIP (10.96.0.1)
    only with a route covering it (kube-proxy's DNAT comes after the route lookup), and kubeadm and
    Calico pick the node's address from the default route. The host never forwards and adds no NAT, so
    nothing sent there leaves the host. With `networks:` the gateway is a lab router, which forwards to
    the other networks only."""
    if node.network:
        net = model.networks[node.network]
        return ipaddress.IPv4Network(net.lan).prefixlen, net.gateway, net.host
    gw = model.network.gateway
    return ipaddress.IPv4Network(model.network.lan).prefixlen, gw, gw


def mac(lab: str, node: str) -> str:
    h = hashlib.sha1(f"{lab}/{node}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in h[:3])


# -- acceleration ---------------------------------------------------------------------------


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def probe_kvm(img: Path) -> tuple[bool, str]:
    """Does a guest kernel get as far as its first console line under KVM? (ok, why not).
    Cached per host boot: /dev/kvm that works once keeps working until the host reboots."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    cache = image.images_dir() / "kvm-probe.json"
    try:
        c = json.loads(cache.read_text())
        if c.get("boot_id") == _boot_id() and c.get("qemu") == shutil.which(QEMU):
            return c["ok"], c["why"]
    except (OSError, ValueError, KeyError):
        pass
    argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults", "-display", "none",
            "-no-reboot", "-serial", "stdio", "-kernel", str(img / "vmlinuz"),
            "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 root=/dev/null"]  # fmt: skip
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    ok = False
    try:
        while time.monotonic() - t0 < PROBE_SECONDS:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
                if b"Linux version" in out:
                    ok = True
                    break
    finally:
        exited = p.poll()
        p.kill()
        p.wait()
    if ok:
        why = f"the guest kernel printed its first line in {time.monotonic() - t0:.1f} s"
    else:
        last = [x for x in out.decode(errors="replace").replace("\r", "").splitlines() if x.strip()]
        tail = last[-1][:120] if last else "no output"
        why = (
            f"QEMU under KVM exited ({exited}) before the guest kernel printed anything: {tail!r}"
            if exited is not None
            else f"a guest kernel under KVM printed nothing in {PROBE_SECONDS:.0f} s (last console line: {tail!r})"
        )
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"boot_id": _boot_id(), "qemu": shutil.which(QEMU), "ok": ok, "why": why}))
    except OSError:
        pass
    return ok, why


# -- host network ---------------------------------------------------------------------------


def memory_shortfall(vms: dict[str, int], meminfo: str) -> str | None:
    """Why VMs of these sizes (name -> MiB, the ones not running yet) do not fit in the host's
    available memory (/proc/meminfo's text), or None. QEMU's own overhead counts ~64 MiB a VM."""
    avail = next((int(x.split()[1]) // 1024 for x in meminfo.splitlines() if x.startswith("MemAvailable:")), None)
    if avail is None or not vms:
        return None
    need = sum(vms.values()) + 64 * len(vms)
    if need <= avail:
        return None
    sizes = ", ".join(f"{n} {m} MiB" for n, m in vms.items())
    return f"the VMs need {need} MiB ({sizes}, plus 64 MiB of QEMU each) but the host has {avail} MiB available"


def ensure_tap(lab: str, node: str, bridge: str) -> str:
    tap = names.host_link("lq", lab, node)
    if not link_exists(tap):
        sh.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
    sh.run(["ip", "link", "set", tap, "master", bridge, "up"])
    return tap


def remove_links(lab: str, nodes: list[str]) -> None:
    for link in [names.host_link("lq", lab, n) for n in nodes] + [names.bridge("lq", lab)]:
        if link_exists(link):
            sh.run(["ip", "link", "del", link], check=False)


def remove_routers(lab: str, routers: list[Router]) -> list[int]:
    """The routers' namespaces: what runs in them first (BIRD, sshd: by pid, labctl/host/routers.py), then
    their NICs' host ends (a veth deleted with its namespace is freed by the kernel later, after `down`
    returned). Returns the pids that would not stop."""
    stuck = lab_routers.stop(routers, lambda r: names.netns("lq", lab, r))
    for r in routers:
        for i in r.interfaces:
            veth = router_veth(lab, r.name, i.network)
            if link_exists(veth):
                sh.run(["ip", "link", "del", veth], check=False)
        ns = names.netns("lq", lab, r.name)
        if Path(f"/run/netns/{ns}").exists():
            sh.run(["ip", "netns", "del", ns], check=False)
    return stuck


def lab_links(lab: str) -> list[str]:
    """Every link of the lab on this host: taps, routers' veths, bridges."""
    prefixes = (f"lq{names.lab_id('lq', lab)}", names.bridge("lq", lab))
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefixes))


# -- disks ----------------------------------------------------------------------------------


def overlay(backing: Path, fmt: str, disk: Path) -> None:
    """The node's disk: a qcow2 overlay on the base image (labctl's base.raw or a cloud image)."""
    if not disk.exists():
        sh.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", fmt, str(disk)])


def image_format(path: Path) -> str:
    """qcow2 or raw, as qemu-img reads the file (never guessed from the name)."""
    info = json.loads(sh.run(["qemu-img", "info", "--output=json", str(path)]).stdout)
    if info.get("format") not in ("qcow2", "raw"):
        raise HostError(f"{path} is a {info.get('format')} image", "give a qcow2 or raw cloud image")
    return info["format"]


def config_disk(node_dir: Path, node: Node, model: LabModel, pubkey: str) -> Path:
    """The node's settings as a small ext4 image (rebuilt every boot: cheap, always current)."""
    src = node_dir / "config"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(mode=0o700)
    plen, gateway, host = lan(model, node)
    (src / "hostname").write_text(node.name + "\n")
    (src / "hosts").write_text(
        f"127.0.0.1 localhost\n127.0.1.1 {node.name}\n::1 localhost ip6-localhost ip6-loopback\n"
        + "".join(f"{n.address} {n.name}\n" for n in model.nodes)
        + f"{host} {proxy.NAME}\n"
    )
    # apt reaches the mirror through the proxy on the host's address on this LAN, never through a router
    (src / "lab.network").write_text(
        f"[Match]\nMACAddress={mac(model.name, node.name)}\n\n"
        f"[Network]\nAddress={node.address}/{plen}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        + (f"Gateway={gateway}\n" if gateway else "")
    )
    # the lab's resolver (dns.py) on the host's address on this LAN
    (src / "resolv.conf").write_text(f"nameserver {host}\noptions timeout:2 attempts:2\n")
    (src / "ifname").write_text(f"{mac(model.name, node.name)} {node.interface}\n")
    (src / "authorized_keys").write_text(pubkey)
    for suffix in ("", ".pub"):
        shutil.copyfile(node_dir / f"ssh_host_ed25519_key{suffix}", src / f"ssh_host_ed25519_key{suffix}")
    img = node_dir / "config.img"
    img.unlink(missing_ok=True)
    with open(img, "wb") as f:
        f.truncate(4 << 20)
    sh.run(["mkfs.ext4", "-q", "-F", "-L", "labctl-cfg", "-d", str(src), str(img)])
    shutil.rmtree(src)
    return img


def seed_iso(node_dir: Path, node: Node, model: LabModel, pubkey: str) -> Path:
    """A cloud-init NoCloud seed (volume label cidata) for a user-supplied cloud image, made by the
    distro's cloud-localds: the same settings as the config disk (hostname, static address on the NIC
    renamed as the topology says, the lab key for the sudo user, the host key labctl pinned)."""
    src = node_dir / "seed"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(mode=0o700)
    plen, gateway, host = lan(model, node)
    key = node_dir / "ssh_host_ed25519_key"
    user = {
        "hostname": node.name,
        "preserve_hostname": False,
        "manage_etc_hosts": False,
        "users": [
            {
                "name": image.USER,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": [pubkey.strip()],
            }
        ],
        "ssh_pwauth": False,
        "disable_root": True,
        # the host key labctl generated and pinned; no others (no trust on first use)
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": key.read_text(), "ed25519_public": Path(f"{key}.pub").read_text().strip()},
        "write_files": [
            {
                "path": "/etc/hosts",
                "content": f"127.0.0.1 localhost\n127.0.1.1 {node.name}\n"
                + "".join(f"{n.address} {n.name}\n" for n in model.nodes)
                + f"{host} {proxy.NAME}\n",
            }
        ],
    }
    (src / "user-data").write_text("#cloud-config\n" + yaml.safe_dump(user, sort_keys=False))
    (src / "meta-data").write_text(
        yaml.safe_dump({"instance-id": f"labctl-{model.name}-{node.name}", "local-hostname": node.name})
    )
    # default route: the host (one LAN; it never forwards) or a lab router (networks:); DNS: dns.py
    eth = {
        "match": {"macaddress": mac(model.name, node.name)},
        "set-name": node.interface,
        "addresses": [f"{node.address}/{plen}"],
        "routes": [{"to": "default", "via": gateway}],
        "nameservers": {"addresses": [host]},
    }
    net = {"version": 2, "ethernets": {"lan": eth}}
    (src / "network-config").write_text(yaml.safe_dump(net, sort_keys=False))
    iso = node_dir / "seed.iso"
    iso.unlink(missing_ok=True)
    sh.run(["cloud-localds", "--network-config", str(src / "network-config"), str(iso), str(src / "user-data"),
            str(src / "meta-data")])  # fmt: skip
    os.chmod(iso, 0o600)  # it holds the node's private host key
    shutil.rmtree(src)
    return iso


# -- QEMU -----------------------------------------------------------------------------------


def kernel_boot(base: Path, node_dir: Path) -> list[str]:
    """labctl's image: its kernel booted directly, settings from the node's config disk."""
    meta = json.loads((base / "image.json").read_text())
    return ["-kernel", str(base / "vmlinuz"), "-initrd", str(base / "initrd.img"), "-append", meta["cmdline"],
            "-drive", f"file={node_dir / 'config.img'},if=virtio,format=raw,readonly=on"]  # fmt: skip


def cloud_boot(node_dir: Path) -> list[str]:
    """A cloud image: its own bootloader (SeaBIOS), settings from the NoCloud seed."""
    return ["-drive", f"file={node_dir / 'seed.iso'},if=virtio,format=raw,readonly=on"]


def start(lab: str, node: Node, node_dir: Path, boot: list[str], accel: str, cpus: int, memory: int) -> int:
    """Boot the node's VM unless it runs; its pid. `boot`: kernel_boot() or cloud_boot()."""
    pid = running(node_dir)
    if pid:
        return pid
    pidfile = node_dir / "qemu.pid"
    pidfile.unlink(missing_ok=True)
    tap = names.host_link("lq", lab, node.name)
    argv = [
        QEMU,
        "-name", f"labctl-{lab}-{node.name},process=labctl-{lab}-{node.name}",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(cpus),
        "-m", str(memory),
        "-nodefaults", "-display", "none", "-monitor", "none",
        "-serial", f"file:{node_dir / 'console.log'}",
        "-drive", f"file={node_dir / 'disk.qcow2'},if=virtio,format=qcow2,discard=unmap",
        *boot,
        "-netdev", f"tap,id=lan,ifname={tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=lan,mac={mac(lab, node.name)}",
        "-device", "virtio-rng-pci",
        "-pidfile", str(pidfile),
        "-daemonize",
    ]  # fmt: skip
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise HostError(f"QEMU did not start node {node.name}: {(p.stderr or p.stdout).strip()[-300:]}")
    pid = read_pid(pidfile)
    if not pid:
        raise HostError(f"QEMU of node {node.name} wrote no pid file", f"see {node_dir / 'console.log'}")
    return pid


def running(node_dir: Path) -> int | None:
    """The pid of the node's QEMU if it is alive (and really QEMU on this node's disk)."""
    pid = read_pid(node_dir / "qemu.pid")
    if not pid:
        return None
    if not alive(pid) or str(node_dir / "disk.qcow2") not in cmdline(pid):
        return None
    return pid


def booted(node_dir: Path) -> bool:
    """Has the VM's current boot reached its login prompt (sshd starts before getty)? QEMU
    truncates console.log when it starts, so an older boot's prompt does not count."""
    try:
        return b" login: " in (node_dir / "console.log").read_bytes()
    except OSError:
        return False


def stop(node_dirs: list[Path], timeout: float = 10.0) -> list[str]:
    """Kill every node's QEMU (by its pid); returns the nodes whose QEMU outlived SIGKILL."""
    pids = {p: d for d in node_dirs if (p := running(d))}
    return [pids[p].name for p in terminate(pids, timeout)]


def wait_ssh(nodes: list[Node], timeout: float, alive, cancel=None) -> list[str]:
    """Wait until every node's sshd sends its banner; returns the nodes that never did. `alive(node)`
    says whether its QEMU still runs (a dead one fails at once)."""

    pending = {n.name: n for n in nodes}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        if cancel is not None:
            cancel()
        for name, n in list(pending.items()):
            if not alive(n):
                raise HostError(f"the VM of node {name} stopped while booting", "see its console.log in the lab dir")
            try:
                with socket.create_connection((n.address, 22), timeout=2) as s:
                    s.settimeout(10)  # sshd answers in seconds on an emulated VM of a loaded host
                    if s.recv(8).startswith(b"SSH-"):
                        del pending[name]
            except OSError:
                pass
        if pending:
            time.sleep(0.5)
    return sorted(pending)


def home_lock_dir() -> Path:
    return layout.home()
