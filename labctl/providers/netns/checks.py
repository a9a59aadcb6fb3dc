"""What a netns lab needs of this host, checked before anything is made: its tools and room in the
neighbour table (root, routes, a safe lab dir: labctl/host/preflight.py, shared with qemu)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import HostError
from labctl.plan.model import LabModel
from labctl.spec import calico

TOOLS = ("ip", "bridge", "bird", "birdc", "sshd", "ssh", "ssh-keygen", "nsenter", "unshare", "ping", "sysctl")
GC_THRESH3 = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")


def check_neighbours(model: LabModel) -> list[str]:
    """Refuse a lab the host's neighbour table cannot hold. The table is one for every namespace,
    capped by gc_thresh3 (1024 by default); past it new entries fail ("neighbor table overflow")
    and sessions and pings stall. labctl writes every neighbour the lab uses as a permanent entry,
    which Linux >= 4.19 keeps out of that count (see lan_neighbours): then the lab adds nothing
    to it, at any size. Older kernels count permanent entries too. Returns warnings."""
    need = neighbour_need(model)
    counted = need.dynamic + (0 if kernel_exempts_permanent() else need.permanent)
    limit = read_int(GC_THRESH3)
    knobs = "net.ipv4.neigh.default.gc_thresh"
    raise_it = f"sysctl -w {knobs}2={2 * counted} {knobs}3={4 * counted}"
    if limit is not None and counted > limit:
        raise HostError(
            f"lab {model.name!r} needs {counted} neighbour entries, more than the host's neighbour table "
            f"holds for all namespaces together (net.ipv4.neigh.default.gc_thresh3 = {limit}; this kernel, "
            f"{os.uname().release}, counts permanent entries against it): its sessions and pings would stall",
            f"raise the host's limit: {raise_it}, or use a kernel >= 4.19",
        )
    soft = read_int(GC_THRESH3.with_name("gc_thresh2"))
    if soft is not None and counted > soft:
        # past gc_thresh2 the kernel evicts entries older than 5 s: it works, with re-resolution delays
        return [
            f"this lab needs {counted} neighbour entries, over the host's gc_thresh2 ({soft}): the kernel "
            f"will evict and re-resolve them (slower); `{raise_it}` avoids it"
        ]
    return []


@dataclass(frozen=True)
class NeighbourNeed:
    permanent: int  # written by labctl: out of gc_thresh's count on Linux >= 4.19
    dynamic: int  # resolved by ARP: counted against gc_thresh1/2/3


def neighbour_need(model: LabModel) -> NeighbourNeed:
    """The IPv4 neighbour entries a running lab holds, all namespaces together: the host's entry for
    each node on the bridge; each node's for the gateway and every other node on the LAN (BGP
    sessions, and with reflectors the data path goes node to node too); with VXLAN each node's VTEP
    entry per peer; per pod one on each side of its veth. All permanent: nothing on the lab's paths
    is left to ARP (tests/test_netns_lifecycle.py pins this against a live count)."""
    n = len(model.nodes)
    vteps = n * (n - 1) if calico.vteps(model.calico.tunnel_device) else 0
    pods = sum(len(node.pods) for node in model.nodes)
    return NeighbourNeed(permanent=n + n * n + vteps + 2 * pods, dynamic=0)


def kernel_exempts_permanent(release: str | None = None) -> bool:
    """Linux 4.19 took permanent neighbour entries out of the gc_thresh count (commit 58956317c8de)."""
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return m is not None and (int(m[1]), int(m[2])) >= (4, 19)


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
