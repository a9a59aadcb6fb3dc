"""`ip -j` / `bridge -j` output: parsing and routes as text (who programs the routes: labctl.spec.calico)."""

from __future__ import annotations

import json


def loads(text: str) -> list:
    """`ip -j` output as a list; empty or garbled output (an error message) is no data."""
    try:
        v = json.loads(text) if text and text.strip() else []
    except ValueError:
        return []
    return v if isinstance(v, list) else []


def protocol(r: dict) -> str:
    """A route's protocol as a string (ip prints unnamed protocols as numbers)."""
    return str(r.get("protocol", ""))


def own_block(routes: list[dict], protocols: set[str]) -> str:
    """The node's own IPAM block: Calico blackholes it (and announces it)."""
    return next((r["dst"] for r in routes if r.get("type") == "blackhole" and protocol(r) in protocols), "")


def prefixlen(r: dict) -> int:
    d = r.get("dst", "")
    return 0 if d == "default" else (int(d.split("/")[1]) if "/" in d else 32)


def route_line(r: dict) -> str:
    """An `ip -j route` entry back in `ip route` words, so the reader sees the route as on the node."""
    words = [r["type"]] if r.get("type") not in (None, "unicast") else []
    words.append(r.get("dst", "?"))
    for key, word in (("gateway", "via"), ("dev", "dev"), ("protocol", "proto"), ("scope", "scope")):
        if r.get(key) and not (key == "scope" and r[key] == "global"):
            words += [word, str(r[key])]
    if r.get("metric") is not None:
        words += ["metric", str(r["metric"])]
    return " ".join(words + r.get("flags", []))


def short_route(r: dict) -> str:
    """Type, destination, gateway, device and flags: what `labctl bgp` shows of a kernel route."""
    return route_line({k: r[k] for k in ("type", "dst", "gateway", "dev", "flags") if k in r})


def host_route(routes: list[dict], ip: str) -> dict | None:
    """The /32 towards one address (a pod's, on its node), if the table has one."""
    return next((r for r in routes if r.get("dst") in (ip, f"{ip}/32") and r.get("type", "unicast") == "unicast"), None)


def link_mac(links: list[dict], ifname: str) -> str:
    return next((x.get("address", "") for x in links if x.get("ifname") == ifname), "")
