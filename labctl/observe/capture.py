"""`labctl capture`: tcpdump on a node (or in a pod) streamed back as pcap, decoded one line per packet.

tcpdump runs where the packets are, reached the way every other command reaches a node (its SSH,
with sudo when the user is not root), writes pcap to stdout (-U: a packet as soon as it is seen),
and is stopped by its pid. The pcap stream is decoded here with a small stdlib decoder that shows
both headers of a tunnelled packet: VXLAN (UDP 4789) and IPIP (IP protocol 4)."""

from __future__ import annotations

import os
import shlex
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from labctl.errors import LabctlError, UsageError
from labctl.live.nodes import sudo
from labctl.plan.model import LabModel, Node

VXLAN_PORT = 4789
ICMP_TYPES = {0: "echo reply", 3: "unreachable", 8: "echo request", 11: "time exceeded"}
IP_PROTOS = {1: "ICMP", 4: "IPIP", 6: "TCP", 17: "UDP"}
TCP_FLAGS = "FSRPAU"

# -- the pcap stream ----------------------------------------------------------------------------


class PcapStream:
    """Incremental pcap reader: feed() bytes as they arrive, get back (ts, frame, wire length)."""

    def __init__(self):
        self.buf = b""
        self.endian = ""
        self.linktype = None
        self.nano = False

    def feed(self, data: bytes) -> list[tuple[float, bytes, int]]:
        self.buf += data
        out = []
        if self.linktype is None:
            if len(self.buf) < 24:
                return out
            magic = self.buf[:4]
            for e in ("<", ">"):
                m = struct.unpack(e + "I", magic)[0]
                if m in (0xA1B2C3D4, 0xA1B23C4D):
                    self.endian, self.nano = e, m == 0xA1B23C4D
            if not self.endian:
                raise LabctlError("tcpdump did not send a pcap stream")
            self.linktype = struct.unpack(self.endian + "I", self.buf[20:24])[0] & 0xFFFF
            self.buf = self.buf[24:]
        while len(self.buf) >= 16:
            sec, frac, incl, orig = struct.unpack(self.endian + "IIII", self.buf[:16])
            if len(self.buf) < 16 + incl:
                break
            ts = sec + frac / (1e9 if self.nano else 1e6)
            out.append((ts, self.buf[16 : 16 + incl], orig))
            self.buf = self.buf[16 + incl :]
        return out


# -- decoding -----------------------------------------------------------------------------------


def _ip4(b: bytes) -> str:
    return socket.inet_ntoa(b)


def _ether(frame: bytes) -> tuple[int, bytes]:
    etype, off = struct.unpack("!H", frame[12:14])[0], 14
    while etype == 0x8100 and len(frame) >= off + 4:  # 802.1Q tags
        etype, off = struct.unpack("!H", frame[off + 2 : off + 4])[0], off + 4
    return etype, frame[off:]


def _payload(etype: int, b: bytes, layers: list[dict]) -> None:
    if etype == 0x0800:
        _ipv4(b, layers)
    elif etype == 0x0806 and len(b) >= 28:
        op = struct.unpack("!H", b[6:8])[0]
        spa, tpa = _ip4(b[14:18]), _ip4(b[24:28])
        mac = ":".join(f"{x:02x}" for x in b[8:14])
        text = f"ARP who-has {tpa} tell {spa}" if op == 1 else f"ARP {spa} is-at {mac}"
        layers.append({"proto": "ARP", "src": spa, "dst": tpa, "text": text})
    else:
        layers.append({"proto": f"ethertype 0x{etype:04x}", "src": "", "dst": "", "text": f"ethertype 0x{etype:04x}"})


def _ipv4(b: bytes, layers: list[dict]) -> None:
    if len(b) < 20 or b[0] >> 4 != 4:
        layers.append({"proto": "?", "src": "", "dst": "", "text": "truncated or non-IPv4 packet"})
        return
    ihl, total, proto = (b[0] & 0xF) * 4, struct.unpack("!H", b[2:4])[0], b[9]
    src, dst = _ip4(b[12:16]), _ip4(b[16:20])
    body = b[ihl:total] if total >= ihl else b[ihl:]
    layer = {"src": src, "dst": dst, "proto": IP_PROTOS.get(proto, f"proto {proto}"), "len": total}
    layers.append(layer)
    detail = ""
    if proto == 1 and len(body) >= 4:
        detail = ICMP_TYPES.get(body[0], f"type {body[0]}")
        if body[0] in (0, 8) and len(body) >= 8:
            detail += " id {} seq {}".format(*struct.unpack("!HH", body[4:8]))
    elif proto in (6, 17) and len(body) >= 4:
        sport, dport = struct.unpack("!HH", body[:4])
        layer |= {"sport": sport, "dport": dport}
        if proto == 6 and len(body) >= 14:
            flags = "".join(f for i, f in enumerate(TCP_FLAGS) if body[13] & (1 << i))
            detail = f"{sport} > {dport} [{flags}]" + (" (BGP)" if 179 in (sport, dport) else "")
        elif proto == 17 and dport == VXLAN_PORT and len(body) >= 16:
            vni = int.from_bytes(body[12:15], "big")
            layer |= {"encap": "VXLAN", "vni": vni}
            detail = f"{VXLAN_PORT} VNI {vni}"
        else:
            detail = f"{sport} > {dport}"
    elif proto == 4:
        layer["encap"] = "IPIP"
    layer["text"] = f"{src} > {dst} {layer['proto']}" + (f" {detail}" if detail else "")
    if layer.get("encap") == "VXLAN":
        _payload(*_ether(body[16:]), layers)
    elif proto == 4:
        _ipv4(body, layers)


def decode(linktype: int, frame: bytes) -> list[dict]:
    """The packet's headers, outermost first: one dict per IP (or ARP) header."""
    layers: list[dict] = []
    if linktype == 1 and len(frame) >= 14:  # Ethernet
        _payload(*_ether(frame), layers)
    elif linktype in (12, 101, 228):  # raw IP (tunl0)
        _ipv4(frame, layers)
    elif linktype == 113 and len(frame) >= 16:  # Linux cooked (-i any)
        _payload(struct.unpack("!H", frame[14:16])[0], frame[16:], layers)
    elif linktype == 276 and len(frame) >= 20:  # Linux cooked v2
        _payload(struct.unpack("!H", frame[0:2])[0], frame[20:], layers)
    else:
        layers.append({"proto": "?", "src": "", "dst": "", "text": f"link type {linktype}, not decoded"})
    return layers


def line(layers: list[dict], length: int) -> str:
    """outer ... | inner ...: both headers of an encapsulated packet on one line."""
    return " | inner ".join(x["text"] for x in layers) + f", length {length}"


def packet(ts: float, linktype: int, frame: bytes, length: int) -> dict:
    layers = decode(linktype, frame)
    encap = next((x["encap"] for x in layers if x.get("encap")), None)
    return {"time": ts, "length": length, "encap": encap, "layers": layers, "line": line(layers, length)}


def stamp(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1e6):06d}"


# -- the remote tcpdump -------------------------------------------------------------------------


def target(model: LabModel, spec: str) -> dict:
    """NODE[:IFACE] or POD[:IFACE] -> where to run tcpdump: the node, a netns prefix, the interface."""
    name, _, iface = spec.partition(":")
    for n in model.nodes:
        if n.name == name:
            iface = iface or n.interface
            return {"node": n, "netns": None, "iface": iface, "label": f"{name}:{iface}"}
        for p in n.pods:
            if p.name == name:
                return {"node": n, "netns": p.netns, "iface": iface or "eth0", "label": f"{name}:{iface or 'eth0'}"}
    for r in model.routers or []:  # a lab router's interfaces, as `labctl impair` reaches them
        if r.name == name:
            iface = iface or r.interface
            return {"node": r, "netns": None, "iface": iface, "label": f"{name}:{iface}"}
    names = [n.name for n in model.nodes] + [p.name for n in model.nodes for p in n.pods]
    names += [r.name for r in model.routers or []]
    raise UsageError(f"no node or workload {name!r} in lab {model.name}", f"one of: {', '.join(names)}")


def _in_ns(t: dict, argv: list[str]) -> str:
    cmd = shlex.join(argv)
    return f"ip netns exec {shlex.quote(t['netns'])} {cmd}" if t["netns"] else cmd


def tcpdump_argv(iface: str, count: int | None = None, bpf: str | None = None) -> list[str]:
    argv = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-s", "262144", "-w", "-"]
    if count:
        argv += ["-c", str(count)]
    return argv + ([bpf] if bpf else [])


def own_ssh_filter(ssh_connection: str) -> str | None:
    """A filter leaving out the SSH connection the capture streams over: captured, every packet
    would cause another one. SSH_CONNECTION is 'client port server port'."""
    parts = ssh_connection.split()
    if len(parts) != 4:
        return None
    return f"not (host {parts[0]} and tcp port {parts[1]} and tcp port {parts[3]})"


def combined_filter(bpf: str | None, own: str | None) -> str | None:
    if not own:
        return bpf
    return f"({bpf}) and {own}" if bpf else own


def check_command(t: dict, bpf: str | None) -> str:
    """Run before anything starts: the interface exists, tcpdump is there and accepts the filter;
    prints the SSH connection last."""
    s = sudo(t["node"])
    # `any`: tcpdump's pseudo-device for every interface, which `ip link` does not know
    link = "true" if t["iface"] == "any" else _in_ns(t, ["ip", "-o", "link", "show", "dev", t["iface"]])
    compile_ = _in_ns(t, ["tcpdump", "-d", "-i", t["iface"]] + ([bpf] if bpf else []))
    return (
        f"command -v tcpdump >/dev/null || {{ echo 'NOTCPDUMP'; exit 3; }}; "
        f"{s}{link} >/dev/null 2>&1 || {{ echo 'NOIFACE'; exit 4; }}; "
        f'{s}{compile_} >/dev/null && echo "SSH=$SSH_CONNECTION"'
    )


def start_command(t: dict, count: int | None, bpf: str | None) -> str:
    """sh prints its pid, then becomes tcpdump (exec keeps the pid): the pid stop() kills."""
    inner = "echo $$ >&2; exec " + _in_ns(t, tcpdump_argv(t["iface"], count, bpf))
    return f"{sudo(t['node'])}sh -c {shlex.quote(inner)}"


def stop_command(node: Node, pid: int) -> str:
    # only that pid, and only while it still is a tcpdump (pids get reused)
    return f'[ "$(cat /proc/{pid}/comm 2>/dev/null)" = tcpdump ] && {sudo(node)}kill -TERM {pid}; true'


def preflight(shell, t: dict, bpf: str | None) -> str | None:
    """Refuse bad input before anything starts; returns the filter to run (the user's, minus the
    capture's own SSH connection)."""
    if bpf is not None and bpf.lstrip().startswith("-"):
        # tcpdump would take it as its own options (`-w FILE` as root on the node)
        raise UsageError(f"--filter {bpf!r}: a BPF expression, not tcpdump options", "e.g. --filter 'icmp or arp'")
    rc, out, err = shell.run(check_command(t, bpf), timeout=15)
    if rc == 0:
        ssh = next((x[4:] for x in out.splitlines() if x.startswith("SSH=")), "")
        return combined_filter(bpf, own_ssh_filter(ssh))
    where = t["node"].name + (f" (netns {t['netns']})" if t["netns"] else "")
    if "NOTCPDUMP" in out:
        raise LabctlError(f"tcpdump is not installed on {where}", "apt-get install tcpdump on the node")
    if "NOIFACE" in out:
        raise UsageError(f"no interface {t['iface']!r} on {where}", "see `labctl exec NODE -- ip -br link`")
    msg = next((x for x in err.splitlines() if x.startswith("tcpdump:")), err.strip() or f"exit {rc}")
    raise UsageError(f"tcpdump rejects the filter {bpf!r}: {msg.removeprefix('tcpdump: ')}")


class Capture:
    """One running tcpdump over an SSH channel: start(), then read() pcap chunks, stop()."""

    def __init__(self, shell, t: dict, count: int | None = None, bpf: str | None = None):
        self.shell, self.t, self.count, self.bpf = shell, t, count, bpf
        self.pid: int | None = None
        self.chan = None
        self.err = ""
        self.stream = PcapStream()
        self.stopped = False

    def start(self, ready_timeout: float = 10.0) -> None:
        self.chan = self.shell.client.get_transport().open_session()
        self.chan.exec_command(start_command(self.t, self.count, self.bpf))
        deadline = time.monotonic() + ready_timeout
        # stderr: first the pid, then tcpdump's "listening on ..." once the socket is open
        while "listening on" not in self.err and time.monotonic() < deadline:
            if not self._read_stderr():
                if self.chan.exit_status_ready():
                    break
                time.sleep(0.01)
        if "listening on" not in self.err:
            self.stop()
            tail = [x for x in self.err.splitlines() if x.startswith("tcpdump:")]
            raise LabctlError(f"tcpdump on {self.t['label']} did not start: {tail[-1] if tail else self.err.strip()}")

    def _read_stderr(self) -> bool:
        """Take what tcpdump's shell wrote to stderr (its pid first); False if nothing was there."""
        if not self.chan.recv_stderr_ready():
            return False
        self.err += self.chan.recv_stderr(4096).decode(errors="replace")
        if self.pid is None and "\n" in self.err:
            first = self.err.split("\n", 1)[0].strip()
            self.pid = int(first) if first.isdigit() else None
        return True

    def read(self, timeout: float = 0.2) -> bytes | None:
        """A chunk of pcap, b"" if nothing came in `timeout`, None once tcpdump has exited."""
        self.chan.settimeout(timeout)
        try:
            data = self.chan.recv(65536)
        except TimeoutError:
            return b""
        except socket.timeout:  # noqa: UP041 - paramiko raises socket.timeout
            return b""
        return data or None

    def packets(self, data: bytes) -> list[dict]:
        return [packet(ts, self.stream.linktype, f, n) for ts, f, n in self.stream.feed(data)]

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        # stopped while starting (Ctrl-C, TERM): the pid may be on its way still
        deadline = time.monotonic() + 2.0
        while self.pid is None and self.chan is not None and not self.chan.exit_status_ready():
            if time.monotonic() > deadline:
                break
            if not self._read_stderr():
                time.sleep(0.01)
        if self.pid is not None and self.chan is not None and not self.chan.exit_status_ready():
            try:
                self.shell.run(stop_command(self.t["node"], self.pid), timeout=10)
            except Exception:  # the connection is gone: sshd closes the pipe, tcpdump dies on its next write
                pass

    def drain(self, timeout: float = 3.0) -> bytes:
        """What tcpdump still wrote after stop(), up to its exit."""
        out, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = self.read(0.1)
            if chunk is None:
                break
            out += chunk
        return out

    def close(self) -> None:
        self.stop()
        if self.chan is not None:
            self.chan.close()


def run(shell, t: dict, count: int | None, bpf: str | None, duration: float | None, on_chunk, on_packet) -> int:
    """Capture until tcpdump exits (-c), `duration` passes, or Ctrl-C (re-raised after tcpdump is
    stopped). Returns the number of packets seen."""
    cap = Capture(shell, t, count, bpf)
    seen = 0
    try:
        cap.start()
        deadline = time.monotonic() + duration if duration else None
        while True:
            if deadline and time.monotonic() >= deadline:
                cap.stop()
                chunks = [cap.drain()]
            else:
                chunk = cap.read(0.2)
                if chunk is None:
                    break
                chunks = [chunk]
            for chunk in chunks:
                on_chunk(chunk)
                for p in cap.packets(chunk):
                    seen += 1
                    on_packet(p)
            if cap.stopped:
                break
    finally:
        cap.close()
    return seen


def stream_packets(caps: list[Capture], seconds: float) -> Iterator[tuple[Capture, dict]]:
    """Read several running captures for `seconds`, yielding (capture, packet) as they come."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for c in caps:
            chunk = c.read(0.02)
            for p in c.packets(chunk or b""):
                yield c, p


class PcapFile:
    """`capture -w FILE`: the pcap goes to a new file beside FILE, renamed over it once tcpdump has sent
    its stream. A capture that fails to start leaves an old FILE as it was, and a symlink (labctl runs
    as root) is refused, never followed."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.tmp: Path | None = None
        self.f = None
        self.written = 0
        p, parent = self.path, self.path.parent
        if p.is_symlink():
            raise UsageError(f"-w {p}: is a symbolic link: refusing to write through it", "name the file itself")
        if p.is_dir():
            raise UsageError(f"-w {p}: is a directory", f"name a file in it, e.g. {p / 'capture.pcap'}")
        if p.exists() and not p.is_file():
            raise UsageError(f"-w {p}: is not a regular file", "name a new file, or '-' for stdout")
        if not parent.is_dir():
            raise UsageError(f"-w {p}: no directory {parent}", "name a file in an existing directory")

    def open(self) -> None:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part")
        except OSError as e:
            raise UsageError(f"-w {self.path}: cannot write in {self.path.parent}: {e.strerror}") from None
        self.tmp = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
        self.f = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        try:
            self.f.write(data)
            self.f.flush()
        except OSError as e:
            raise LabctlError(f"cannot write {self.path}: {e.strerror}") from None
        self.written += len(data)

    def close(self) -> None:
        """Rename the new file over FILE if tcpdump sent anything (its pcap header at least); else drop it."""
        if self.f is None:
            return
        self.f.close()
        self.f = None
        if self.written:
            os.replace(self.tmp, self.path)  # rename(2) replaces a symlink made meanwhile, never its target
        else:
            self.tmp.unlink(missing_ok=True)
