"""`ip -j` / `bridge -j` output: parsing, the route protocol the dataplane uses, routes as text."""

from __future__ import annotations

import json

from labctl.spec.providers import traits

# Who programs the pod network's routes (the peers' blocks and the node's own blackhole). On a real
# Calico node exactly one component does, and confd's kernel filter keeps the other out (the pool is
# rejected "VXLAN routes are handled by Felix" / "Cluster routes are handled by Felix":
# confd/pkg/backends/calico/bgp_processor.go, processIPPool, at v3.32.1). Felix tags its routes protocol
# 80 (felix/dataplane/linux/dataplanedefs/dataplane_defs.go: VXLANDefaultProto up to v3.30,
# DefaultRouteProto since), BIRD `proto bird`. By version:
# - VXLAN pools: Felix, every version.
# - IPIP and unencapsulated pools up to v3.32: BIRD. v3.31 added FelixConfiguration.programClusterRoutes
#   and v3.32 the operator's Installation.calicoNetwork.clusterRoutingMode, both defaulting to BIRD
#   (felix/config/config_params.go at v3.32.1: `oneof(Enabled,Disabled);Disabled`; manifests/
#   operator-crds.yaml at v3.32.1: "[Default: BIRD]"); labctl sets neither.
# - IPIP pools from v3.33: Felix. programClusterRoutes defaults to EnabledIPIPOnly (projectcalico/calico
#   PR #13470, merge 7283007332, "Felix programs IPIP cluster routes by default; deprecate BIRD doing so";
#   felix/config/config_params.go on release-v3.33); unencapsulated pools stay BIRD's. (v3.33 is not
#   released yet, only v3.33.0-0.dev is tagged, and topology validation stops at v3.32: the rule is here
#   so that raising that limit is the only change.) The eBPF dataplane (BPFEnabled) changes none of this.
# On netns labs labctl's BIRD emulates the dataplane: its routes stay `proto bird` whatever the version,
# and with VXLAN the Felix routes render.py programs are proto 80, so both count there.
BIRD = "bird"
FELIX = "80"
FELIX_IPIP_FROM = (3, 33)


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.lstrip("v").split(".")[:2]
    return int(major), int(minor)


def route_owner(version: str, encapsulation: str) -> str:
    """The route protocol of the component that programs a real Calico node's pod routes."""
    if encapsulation.startswith("VXLAN"):
        return FELIX
    if encapsulation.startswith("IPIP") and _minor(version) >= FELIX_IPIP_FROM:
        return FELIX
    return BIRD


def dataplane_protocols(encapsulation: str, tunnel_device: str | None, version: str | None = None) -> set[str]:
    """Route protocols that count as the pod network's: on a real cluster (`version`: its Calico) only
    the owner's; on labctl's emulation (version None) BIRD's, and Felix's 80 with VXLAN."""
    if version is not None:
        return {route_owner(version, encapsulation)}
    vxlan = encapsulation.startswith("VXLAN") or tunnel_device == "vxlan.calico"
    return {BIRD, FELIX} if vxlan else {BIRD}


def lab_protocols(model) -> set[str]:
    """dataplane_protocols of a lab: the version's rule where real Calico runs, the emulation's on netns."""
    c = model.calico
    real = not traits(model.provider).emulated
    return dataplane_protocols(c.encapsulation, c.tunnel_device, c.version if real else None)


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
