"""Calico's encapsulation semantics, decided once: the tunnel device, which hop encapsulates, and who
programs the pod network's routes. Pure: the caller says what the host has (`ipip`) and what runs."""

from __future__ import annotations

from labctl.spec.providers import traits

TUNL0 = "tunl0"
VXLAN_DEVICE = "vxlan.calico"
TUNNELS = (TUNL0, VXLAN_DEVICE)
EMULATED_NOTE = f" (IPIP emulated on {VXLAN_DEVICE})"

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
# and with VXLAN the Felix routes labctl programs are proto 80, so both count there.
BIRD = "bird"
FELIX = "80"
FELIX_IPIP_FROM = (3, 33)


def tunnelled(encapsulation: str) -> bool:
    """Nodes get a tunnel device and a tunnel address (Calico's IPIP/VXLAN); None: plain routes."""
    return encapsulation != "None"


def tunnel_device(encapsulation: str, ipip: bool) -> str | None:
    """The node's tunnel device; IPIP falls back to VXLAN where the kernel has no ipip."""
    if not tunnelled(encapsulation):
        return None
    if encapsulation.startswith("IPIP") and ipip:
        return TUNL0
    return VXLAN_DEVICE


def ipip_emulated(encapsulation: str, tunnel: str | None) -> bool:
    """IPIP chosen, but the kernel had none: the lab runs it over vxlan.calico."""
    return encapsulation.startswith("IPIP") and tunnel == VXLAN_DEVICE


def mode(encapsulation: str, tunnel: str | None) -> str:
    """The encapsulation as the reader should see it, the IPIP fallback named."""
    return encapsulation + (EMULATED_NOTE if ipip_emulated(encapsulation, tunnel) else "")


def vteps(tunnel: str | None) -> bool:
    """A VXLAN device: every node holds a neighbour and fdb entry per peer node's VTEP."""
    return tunnel == VXLAN_DEVICE


def cross_subnet(encapsulation: str) -> bool:
    return encapsulation.endswith("CrossSubnet")


def encapsulates(encapsulation: str, same_network: bool) -> bool:
    """Calico's rule: IPIP/VXLAN always; the CrossSubnet modes only towards another network; None never."""
    if encapsulation == "None":
        return False
    return not (cross_subnet(encapsulation) and same_network)


def route_mode(encapsulation: str, tunnel: str | None) -> str:
    """How a one-LAN lab's BIRD programs a peer block: straight over the LAN ("direct"; CrossSubnet
    there, as every node shares the LAN) or through the tunnel device."""
    return "direct" if tunnel is None or cross_subnet(encapsulation) else tunnel


def felix_programs(encapsulation: str) -> bool:
    """On labctl's emulation VXLAN routes come from Felix (proto 80), not BIRD, as in Calico; IPIP emulated
    on vxlan.calico stays BIRD's (the kernel's ipip is missing, not Felix's VXLAN chosen)."""
    return encapsulation.startswith("VXLAN")


def bird_action(native: bool, tunnel: str | None, peer: dict) -> str:
    """BIRD's kernel filter action for a peer node's block: as learned, or on-link through the tunnel
    (tunl0's gateway is the peer's node IP, vxlan.calico's the peer's VTEP)."""
    if native:
        return "accept;"
    if tunnel == TUNL0:
        return f'ifname = "{TUNL0}"; onlink = true; gw = {peer["address"]}; accept;'
    return f'ifname = "{VXLAN_DEVICE}"; onlink = true; gw = {peer["tunnel_ip"]}; accept;'


def felix_route(native: bool, peer: dict, interface: str) -> str:
    """Felix's route (proto 80) to a peer node's block: over the LAN, or to its VTEP on vxlan.calico."""
    if native:
        return f"{peer['block']} via {peer['address']} dev {interface} proto {FELIX}"
    return f"{peer['block']} via {peer['tunnel_ip']} dev {VXLAN_DEVICE} onlink proto {FELIX}"


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


def dataplane_protocols(encapsulation: str, tunnel: str | None, version: str | None = None) -> set[str]:
    """Route protocols that count as the pod network's: on a real cluster (`version`: its Calico) only
    the owner's; on labctl's emulation (version None) BIRD's, and Felix's 80 with VXLAN."""
    if version is not None:
        return {route_owner(version, encapsulation)}
    vxlan = encapsulation.startswith("VXLAN") or tunnel == VXLAN_DEVICE
    return {BIRD, FELIX} if vxlan else {BIRD}


def lab_protocols(model) -> set[str]:
    """dataplane_protocols of a lab: the version's rule where real Calico runs, the emulation's on netns."""
    c = model.calico
    real = not traits(model.provider).emulated
    return dataplane_protocols(c.encapsulation, c.tunnel_device, c.version if real else None)
