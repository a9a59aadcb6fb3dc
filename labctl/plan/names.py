"""The names labctl gives what it makes on a host (bridges, veths and taps, namespaces), in one place:
Linux caps link names at 15 characters, and names stable per node (not per position) mean adding or
removing a node renames nothing. `links` is the provider's prefix (Traits.links: "lc" netns, "lq" qemu)."""

from __future__ import annotations

import hashlib


def _h(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def lab_id(links: str, lab: str) -> str:
    # qemu salts the lab's name: its links never collide with a netns lab's of the same name
    return _h(lab if links == "lc" else f"qemu:{lab}", 6)


def bridge(links: str, lab: str, network: str | None = None) -> str:
    """The lab's bridge; with `networks:` one per network: the lab's bridge name plus 4 hex chars."""
    base = f"br-{links}{lab_id(links, lab)}"
    return base if network is None else f"{base}{_h(network, 4)}"


def lab_bridge(links: str | None, lab: str, network: str | None = None) -> str | None:
    """bridge() for a provider's Traits.links: None where the provider makes no links (vm)."""
    return bridge(links, lab, network) if links else None


def host_link(links: str, lab: str, node: str) -> str:
    """The host's end of a node's link (netns: the veth; qemu: the tap)."""
    return f"{links}{lab_id(links, lab)}{_h(node, 7)}"


def netns(links: str, lab: str, node: str) -> str:
    """The network namespace of a node (netns) or a lab router (netns and qemu)."""
    return f"{links}-{lab}.{node}"


def pod_netns(lab: str, node: str, pod: str) -> str:
    # per node: a workload moving between nodes never meets its old namespace's name
    return f"lc-{lab}.{node}.{pod}"
