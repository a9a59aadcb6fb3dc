"""BGP and router planning of a lab: each node's sessions, and with `networks` or a chosen `calico.bgp`
its network, AS, peers and kernel routes, and the lab routers with their sessions and static routes.
Pure: works on the node dicts the lab model is built from."""

from __future__ import annotations

from labctl.plan import names
from labctl.plan.layout import LabDir
from labctl.spec import calico


def peers(nodes: list[dict], reflectors: set[str]) -> None:
    """Each node's BGP sessions, named as calico-node names them: the full mesh (Mesh_<ip>), or
    with route reflectors, clients to every reflector and reflectors to everyone (Node_<ip>)."""
    for n in nodes:
        n["route_reflector"] = n["name"] in reflectors
        out = []
        for p in nodes:
            if p is n:
                continue
            proto = p["address"].replace(".", "_")
            if not reflectors:
                out.append({"name": p["name"], "address": p["address"], "protocol": "Mesh_" + proto, "type": "mesh"})
            elif n["name"] in reflectors:
                kind = "rr" if p["name"] in reflectors else "rr-client"
                out.append({"name": p["name"], "address": p["address"], "protocol": "Node_" + proto, "type": kind})
            elif p["name"] in reflectors:
                out.append({"name": p["name"], "address": p["address"], "protocol": "Node_" + proto, "type": "rr"})
        n["peers"] = out


def designed(t) -> bool:
    """Whether the lab carries a routing design (networks, a BGP design, Felix's routes): then each node
    gets its design data (racks) and the lab's calico block its `bgp` and `felix`."""
    return bool(t.networks) or t.calico.bgp is not None or calico.felix_programs(t.calico.encapsulation)


def racks(t, kind, lab: LabDir, nodes: list[dict], ipip: bool) -> list[dict]:
    """With `networks` or a chosen `calico.bgp`: each node's network, gateway, AS, BGP peers (tor, none),
    what programs its pod routes (BIRD's kernel filter per block, or Felix's routes), and the routers
    (without their `ssh`: how a router is reached is the caller's)."""
    gw_router = _gateway_routers(t)
    for n in nodes:
        _rack_node(t, n, gw_router)
        _kernel(t, n, nodes, ipip)
    out = [_router(t, kind, lab, r, router) for r, router in (t.routers or {}).items()]
    router_routes(out, t.lans)
    for x in out:
        if x["asn"] is not None:
            x["peers"] += _router_peers(t, x, out, nodes, gw_router)
    return out


def _gateway_routers(t) -> dict[str, tuple[str, int | None]]:
    """network -> (the router that is its gateway, that router's AS)."""
    lans, out = t.lans, {}
    for r, router in (t.routers or {}).items():
        for net, addr in router.interfaces.items():
            if net in lans and addr == lans[net].gateway:
                out[net] = (r, router.asn)
    return out


def _rack_node(t, n: dict, gw_router: dict) -> None:
    """A node's network, gateway, routes to the other networks, AS and (tor, none) BGP peers."""
    design, lans = t.calico.design, t.lans  # t.lans builds new objects: `x is not lan` needs one dict
    net = n.get("network")
    lan = lans.get(net) if net else None
    if lan is not None:
        n["gateway"] = str(lan.gateway)
        n["lans"] = [{"lan": str(x.lan), "via": str(lan.gateway)} for x in lans.values() if x is not lan]
    n["asn"] = lan.asn if design == "tor" and lan is not None else t.calico.asn
    if design == "none":
        n["peers"] = []
    elif design == "tor" and lan is not None and net in gw_router:
        r, asn = gw_router[net]
        gw = str(lan.gateway)
        n["peers"] = [{"name": r, "address": gw, "protocol": "Node_" + gw.replace(".", "_"), "type": "tor", "asn": asn}]


def _kernel(t, n: dict, nodes: list[dict], ipip: bool) -> None:
    """How the node's routes to the other blocks are programmed: Felix's routes, or BIRD's kernel filter
    per block, encapsulated where Calico's rule says so."""
    enc = t.calico.encapsulation
    felix = calico.felix_programs(enc)
    tunnel = calico.tunnel_device(enc, ipip)
    n["kernel"] = "felix" if felix else []
    routes = [f"blackhole {n['block']} proto {calico.FELIX}"]
    for o in nodes:
        if o is n:
            continue
        native = not calico.encapsulates(enc, o.get("network") == n.get("network"))
        if felix:
            routes.append(calico.felix_route(native, o, n["interface"]))
        else:
            n["kernel"].append({"block": o["block"], "action": calico.bird_action(native, tunnel, o)})
    if felix:
        n["felix_routes"] = routes


def _router(t, kind, lab: LabDir, name: str, router) -> dict:
    lans = t.lans
    ifaces = [
        {
            "network": net,
            "ifname": net,
            "address": str(addr),
            "prefixlen": lans[net].lan.prefixlen,
            "bridge": names.lab_bridge(kind.links, t.name, net),
            "host": str(lans[net].host),
        }
        for net, addr in router.interfaces.items()
    ]
    return {
        "name": name,
        "role": "router",
        "address": ifaces[0]["address"],
        "interface": ifaces[0]["ifname"],
        "asn": router.asn,
        "interfaces": ifaces,
        "dir": str(lab.node_dir(name)),
        "bird_socket": str(lab.bird_socket(name)),
        "pods": [],
        "peers": [],
    }


def _router_peers(t, x: dict, routers: list[dict], nodes: list[dict], gw_router: dict) -> list[dict]:
    """A router's sessions: the nodes of the networks it is the gateway of (bgp: tor), and every
    router with an AS it shares a network with."""
    out = []
    mine = {i["network"]: i["address"] for i in x["interfaces"]}
    for n in nodes:
        net = n.get("network")
        if t.calico.design == "tor" and net in mine and gw_router.get(net, ("",))[0] == x["name"]:
            proto = "Node_" + n["address"].replace(".", "_")
            out.append(
                {"name": n["name"], "address": n["address"], "protocol": proto, "type": "tor-client"}
                | {"asn": n["asn"], "local": mine[net]}
            )
    for y in routers:
        shared = [i for i in y["interfaces"] if i["network"] in mine]
        if y is x or y["asn"] is None or not shared:
            continue
        addr = shared[0]["address"]
        out.append(
            {"name": y["name"], "address": addr, "protocol": "Router_" + addr.replace(".", "_"), "type": "router"}
            | {"asn": y["asn"], "local": mine[shared[0]["network"]]}
        )
    return out


def router_routes(routers: list[dict], lans: dict) -> None:
    """Each router's static routes to the networks it does not join: via the nearest router that joins
    them (fewest routers on the way), through the neighbour router on the first shared network. Routers
    pass on only what they learn over BGP, never their connected networks, so a second router needs these."""
    joins = {r["name"]: {i["network"]: i["address"] for i in r["interfaces"]} for r in routers}
    for r in routers:
        first: dict[str, tuple[str, str]] = {}  # router -> (next hop address, our interface), breadth first
        todo, seen = [r["name"]], {r["name"]}
        while todo:
            cur = todo.pop(0)
            for other, nets in joins.items():
                shared = [n for n in joins[cur] if n in nets]
                if other in seen or not shared:
                    continue
                seen.add(other)
                first[other] = first.get(cur) or (nets[shared[0]], shared[0])
                todo.append(other)
        r["routes"] = []
        for net, lan in lans.items():
            hop = next((first[o] for o in first if net in joins[o]), None)
            if net not in joins[r["name"]] and hop is not None:
                r["routes"].append({"lan": str(lan.lan), "via": hop[0], "dev": hop[1]})


def tor_peers(nodes: list[dict]) -> list[dict]:
    """bgp: tor as Calico resources: one BGPPeer per network with nodes, its nodes selected by their
    network label, peering with the network's gateway router in the router's AS."""
    out = {}
    for n in nodes:
        for p in n["peers"]:
            if p["type"] == "tor":
                out[n["network"]] = {"network": n["network"], "address": p["address"], "asn": p["asn"]}
    return list(out.values())
