"""The topology's checks of its networks: CIDRs, gateways, the pod pool and its blocks, and with
`networks:` the routers joining them and the BGP design they allow."""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address

from labctl.spec import calico, providers
from labctl.spec.schema import DNS_LABEL, Lan, Router, Topology
from labctl.spec.yamlsrc import Problem

NETWORK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,14}$")  # it names the router's interface in that network
# made by the kernel in every namespace: a router's interface cannot take that name
RESERVED_IFACES = ("lo", "tunl0", "gre0", "sit0", "ip6tnl0")


def net_problems(t: Topology) -> list[Problem]:
    return _cidr_problems(t) + _gateway_problems(t) + _pool_problems(t)


def _cidr_problems(t: Topology) -> list[Problem]:
    out = []
    nets = {("network", "lan"): t.network.lan} if t.network is not None else {}
    nets |= {("networks", name, "lan"): lan.lan for name, lan in t.lans.items()}
    nets |= {
        ("kubernetes", "pod_subnet"): t.kubernetes.pod_subnet,
        ("kubernetes", "service_subnet"): t.kubernetes.service_subnet,
    }
    for path, net in nets.items():
        if net.prefixlen < 8:
            out.append(Problem(path, f"{net} is too large", "use a /8 or smaller"))
        if net.overlaps(ipaddress.IPv4Network("127.0.0.0/8")) or net.overlaps(ipaddress.IPv4Network("169.254.0.0/16")):
            out.append(Problem(path, f"{net} overlaps loopback or link-local space", None))
    items = list(nets.items())
    for i, (pa, a) in enumerate(items):
        for pb, b in items[i + 1 :]:
            if a.overlaps(b):
                out.append(
                    Problem(pb, f"{b} overlaps {'.'.join(pa)} {a}", "the LAN, pods and services need disjoint CIDRs")
                )
    return out


def _gateway_problems(t: Topology) -> list[Problem]:
    out = []
    for path, lan, gw, given in _gateways(t):
        if given:
            if gw not in lan:
                out.append(Problem(path + ("gateway",), f"{gw} is not inside {'.'.join(path)}.lan {lan}", None))
            elif gw in (lan.network_address, lan.broadcast_address):
                out.append(Problem(path + ("gateway",), f"{gw} is the network or broadcast address of {lan}", None))
        if lan.prefixlen > 29:
            out.append(Problem(path + ("lan",), f"{lan} is too small", "use a /29 or larger"))
    return out


def _pool_problems(t: Topology) -> list[Problem]:
    out = []
    pool = t.pool
    ppath = ("calico", "pool") if t.calico.pool else ("kubernetes", "pod_subnet")
    if t.calico.pool is not None and not pool.subnet_of(t.kubernetes.pod_subnet):
        out.append(
            Problem(
                ppath,
                f"{pool} is not inside kubernetes.pod_subnet {t.kubernetes.pod_subnet}",
                "Calico's operator rejects a pool outside the pod subnet",
            )
        )
    bs = t.calico.block_size
    if not 20 <= bs <= 32:
        out.append(Problem(("calico", "block_size"), f"{bs} is out of range", "20..32 (Calico's default is 26)"))
    elif bs < pool.prefixlen:
        out.append(
            Problem(
                ("calico", "block_size"),
                f"/{bs} blocks are larger than the pool {pool}",
                f"use a block_size of at least {pool.prefixlen}",
            )
        )
    elif 2 ** (bs - pool.prefixlen) < len(t.nodes):
        out.append(
            Problem(
                ppath,
                f"{pool} holds {2 ** (bs - pool.prefixlen)} /{bs} blocks, fewer than the {len(t.nodes)} nodes",
                "use a larger pool or a larger block_size",
            )
        )
    asn = t.calico.asn
    if not 1 <= asn <= 4294967294 or asn in (23456, 65535):
        out.append(
            Problem(
                ("calico", "asn"),
                f"{asn} is not a usable AS number",
                "1-4294967294, not 23456 or 65535; private: 64512-65534",
            )
        )
    return out


def _gateways(t: Topology) -> list[tuple]:
    """(path, lan, gateway, gateway written by the user) of the one network or of each of the networks."""
    if t.network is not None:
        return [(("network",), t.network.lan, t.gateway, t.network.gateway is not None)]
    return [
        (("networks", name), lan.lan, lan.gateway, t.networks[name].gateway is not None) for name, lan in t.lans.items()
    ]


def racks_problems(t: Topology) -> list[Problem]:
    """networks/routers/node network/calico.bgp: each node in its network, the networks joined by routers,
    the BGP design possible with what is declared."""
    if t.network is not None and t.networks is not None:
        return [Problem(("networks",), "network and networks are both set", "one LAN (network) or several (networks)")]
    if t.network is None and not t.networks:
        return [Problem(("network",), "is required", "or networks: several LANs joined by routers")]
    out = _design_problems(t)
    if t.network is not None:
        return out + _one_lan_problems(t)
    lans = t.lans
    routers = t.routers or {}
    out += _network_name_problems(t, lans)
    router_problems, used, gateways = _router_problems(t, lans)
    out += router_problems + _network_problems(t, lans, gateways) + _joined_problems(lans, routers)
    for name, node in t.nodes.items():
        path = ("nodes", name)
        if node.network is None:
            out.append(Problem(path + ("network",), "is required with networks", f"one of: {', '.join(lans)}"))
        elif node.network not in lans:
            out.append(Problem(path + ("network",), f"{node.network!r} is not one of the networks", ", ".join(lans)))
        elif node.address in used:
            out.append(Problem(path + ("address",), f"{node.address} is already used by {used[node.address]}", None))
    return out


def _design_problems(t: Topology) -> list[Problem]:
    out = []
    design = t.calico.design
    if t.calico.bgp == "reflectors" and not t.calico.route_reflectors:
        out.append(Problem(("calico", "bgp"), "reflectors needs calico.route_reflectors", "name the reflector nodes"))
    if t.calico.route_reflectors and design != "reflectors":
        out.append(
            Problem(("calico", "route_reflectors"), f"route reflectors with bgp: {design}", "set bgp: reflectors")
        )
    if design == "none" and not calico.felix_programs(t.calico.encapsulation):
        out.append(
            Problem(
                ("calico", "bgp"),
                f"bgp: none with encapsulation {t.calico.encapsulation}",
                "without BGP only Felix programs routes, and only for VXLAN: use VXLAN or VXLANCrossSubnet",
            )
        )
    return out


def _one_lan_problems(t: Topology) -> list[Problem]:
    """`network:` (one LAN): nothing of several networks may be set."""
    out = []
    if t.routers:
        out.append(Problem(("routers",), "routers need networks", "declare networks: with a LAN each"))
    if t.calico.design == "tor":
        out.append(Problem(("calico", "bgp"), "tor needs networks and routers", "declare networks: and routers:"))
    for name, node in t.nodes.items():
        if node.network is not None:
            out.append(Problem(("nodes", name, "network"), "a node network needs networks:", "remove it"))
    return out


def _network_name_problems(t: Topology, lans: dict[str, Lan]) -> list[Problem]:
    out = []
    kind = providers.traits(t.provider)
    if not (kind.builds_routers or kind.routers_exist):
        out.append(
            Problem(
                ("networks",),
                f"the {t.provider} provider does not build networks and routers yet",
                "use netns, or vm with machines already in those networks",
            )
        )
    for name in lans:
        if not NETWORK_NAME.fullmatch(name):
            out.append(Problem(("networks", name), f"network name {name!r} is not usable", "^[a-z][a-z0-9-]{0,14}$"))
        elif name in RESERVED_IFACES:
            out.append(Problem(("networks", name), f"network name {name!r} names a kernel device", "pick another"))
    return out


def _router_problems(t: Topology, lans: dict[str, Lan]) -> tuple[list[Problem], dict[IPv4Address, str], dict]:
    """The routers' problems, the addresses they use (-> "router NAME"), network -> router holding its gateway."""
    out: list[Problem] = []
    used: dict[IPv4Address, str] = {}
    gateways: dict[str, str] = {}
    for r, router in (t.routers or {}).items():
        path = ("routers", r)
        if not DNS_LABEL.fullmatch(r) or r in t.nodes:
            out.append(Problem(path, f"router name {r!r} is not a DNS-1123 label or is a node's", "pick another"))
        for net, addr in router.interfaces.items():
            ipath = path + ("interfaces", net)
            if net not in lans:
                out.append(Problem(ipath, f"{net!r} is not one of the networks", f"networks: {', '.join(lans)}"))
                continue
            lan = lans[net]
            if addr not in lan.lan or addr in (lan.lan.network_address, lan.lan.broadcast_address):
                out.append(Problem(ipath, f"{addr} is not a host address of {net} {lan.lan}", None))
            elif addr == lan.host:
                out.append(Problem(ipath, f"{addr} is the host's address on {net}", "the last host before the gateway"))
            if addr in used:
                out.append(Problem(ipath, f"{addr} is already used by {used[addr]}", None))
            used.setdefault(addr, f"router {r}")
            if addr == lan.gateway:
                gateways[net] = r
        out += _router_asn_problems(t, lans, path, router)
    return out, used, gateways


def _router_asn_problems(t: Topology, lans: dict[str, Lan], path: tuple, router: Router) -> list[Problem]:
    design = t.calico.design
    if router.asn is None:
        if design == "tor":
            return [Problem(path + ("asn",), "bgp: tor needs an asn on every router", "e.g. asn: 65000")]
        return []
    out = _asn_problems(router.asn, path + ("asn",))
    for net in router.interfaces:
        if design == "tor" and net in lans and t.networks[net].asn == router.asn:
            out.append(
                Problem(
                    path + ("asn",),
                    f"{router.asn} is also network {net}'s asn: its ToR sessions would be iBGP, not eBGP",
                    "give the router an AS of its own",
                )
            )
    return out


def _network_problems(t: Topology, lans: dict[str, Lan], gateways: dict[str, str]) -> list[Problem]:
    out = []
    with_nodes = {node.network for node in t.nodes.values()}
    for name, lan in lans.items():
        if t.networks[name].asn is not None:
            out += _asn_problems(t.networks[name].asn, ("networks", name, "asn"))
        elif t.calico.design == "tor" and name in with_nodes:
            out.append(
                Problem(("networks", name, "asn"), "bgp: tor needs the AS of the nodes in each network", "e.g. 65001")
            )
        if name not in gateways and len(lans) > 1:
            out.append(
                Problem(("networks", name, "gateway"), f"{lan.gateway} is no router's interface", "add it to a router")
            )
    return out


def _joined_problems(lans: dict[str, Lan], routers: dict[str, Router]) -> list[Problem]:
    """Every network reaches every other through routers (a router joins the networks it has interfaces in)."""
    if not lans:
        return []
    out = []
    seen, todo = set(), [next(iter(lans))]
    while todo:
        net = todo.pop()
        if net in seen:
            continue
        seen.add(net)
        todo += [n for r in routers.values() if net in r.interfaces for n in r.interfaces if n in lans]
    for name in lans:
        if name not in seen:
            out.append(Problem(("networks", name), f"no router joins {name} to {next(iter(lans))}", "add an interface"))
    return out


def _asn_problems(asn: int, path: tuple) -> list[Problem]:
    if not 1 <= asn <= 4294967294 or asn in (23456, 65535):
        return [Problem(path, f"{asn} is not a usable AS number", "1-4294967294, not 23456 or 65535")]
    return []
