"""What the providers that build on this host (netns, qemu) share: links and their derived MACs,
permanent neighbour entries, pid files and processes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from labctl.host import sh


def lan_mac(address: str) -> str:
    """The MAC of the NIC holding `address` on a lab LAN (a node's NIC, the host's bridge): derived from
    the address, so every neighbour entry can be written before anything talks."""
    return "02:4c:" + ":".join(f"{int(o):02x}" for o in address.split("."))


def lan_neighbours(ns: str | None, dev: str, want: dict[str, str], fresh: bool) -> list[str]:
    """`ip -batch` lines that make dev's permanent neighbours exactly `want` (IP -> MAC).

    Permanent entries are what Felix writes for VTEPs and workloads: the kernel exempts them from the
    neighbour table's garbage collection and from gc_thresh1/2/3 (net/core/neighbour.c, since Linux
    4.19: neigh_add passes exempt_from_gc for NUD_PERMANENT and neigh_alloc skips the gc_entries
    count and the gc_thresh3 check). The table is one for all namespaces, so a lab that let every
    session and ping resolve by ARP overflowed it at 100 nodes; with these, it needs no dynamic entries
    on the LAN at all."""
    have: dict[str, str] = {}
    if not fresh:
        ipx = ["ip", "-4"] + (["-n", ns] if ns else [])
        for e in json.loads(sh.run(ipx + ["-j", "neigh", "show", "dev", dev, "nud", "permanent"]).stdout or "[]"):
            have[e.get("dst", "")] = e.get("lladdr", "")
    lines = [
        f"neigh replace {ip} lladdr {mac} dev {dev} nud permanent" for ip, mac in want.items() if have.get(ip) != mac
    ]
    lines += [f"neigh del {ip} dev {dev}" for ip in have if ip not in want]
    return lines


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Running, not a zombie: a killed daemon stays a zombie until init reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate(pids, timeout: float = 2.0, again=None) -> list[int]:
    """SIGTERM these processes, then SIGKILL the ones still there after half the timeout; returns the
    pids that outlived both. Always by pid: callers find them by pid file, namespace or path.
    `again()`: the pids to SIGKILL, read afresh (what runs in a namespace may have forked meanwhile)."""
    left = set(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout / 2
        while time.monotonic() < deadline and any(alive(p) for p in left):
            time.sleep(0.02)
        left = {p for p in left if alive(p)}
        if sig == signal.SIGTERM and again is not None:
            left = set(again())
        if not left:
            break
    return sorted(left)
