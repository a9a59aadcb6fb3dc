"""The lab's bridges on this host (netns, qemu, and their lab routers' networks): made one way."""

from __future__ import annotations

from pathlib import Path

from labctl.host import sh
from labctl.host.hostside import lan_mac, link_exists


def ensure_bridge(name: str, address: str, prefixlen: int) -> str:
    """The bridge `name` with the host's `address` on it, up; idempotent. Its MAC is derived from the
    address (lan_mac): else the bridge takes its lowest port's, and every permanent neighbour entry
    written for it goes stale when that port goes."""
    mac = lan_mac(address)
    if not link_exists(name):
        sh.run(["ip", "link", "add", name, "address", mac, "type", "bridge"])
        sh.run(["ip", "addr", "add", f"{address}/{prefixlen}", "dev", name])
    else:
        if Path(f"/sys/class/net/{name}/address").read_text().strip() != mac:
            sh.run(["ip", "link", "set", name, "address", mac])  # a bridge made before labctl fixed its MAC
        if f" {address}/" not in sh.run(["ip", "-4", "-o", "addr", "show", "dev", name]).stdout:
            sh.run(["ip", "addr", "add", f"{address}/{prefixlen}", "dev", name])
    sh.run(["ip", "link", "set", name, "up"])
    return name
