"""Render a lab directory from a topology with Jinja2 (StrictUndefined). Touches no host.

Every value that lands in a YAML file goes through the `y` filter (a JSON scalar, which is
valid YAML), so no topology string can add keys or documents.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jinja2

from labctl.errors import LabctlError, UsageError
from labctl.live import access
from labctl.plan import layout, names
from labctl.plan.layout import LabDir
from labctl.plan.model import LabModel
from labctl.spec.providers import traits
from labctl.spec.schedule import Plan, base_labels
from labctl.spec.schema import Proxy

CRI_SOCKET = "unix:///run/containerd/containerd.sock"
NETWORK_LABEL = "labctl.io/network"  # a vm node's network (`networks:`), as a Kubernetes node label


def _y(value) -> str:
    if hasattr(value, "compressed"):  # ipaddress objects
        value = str(value)
    return json.dumps(value)


def _ansible_y(value) -> str:
    """`y` for files ansible reads: a string that could hold Jinja is marked !unsafe, so a
    topology value is data to ansible, never a template."""
    text = _y(value)
    if isinstance(value, str) and any(m in value for m in ("{{", "{%", "{#")):
        return f"!unsafe {text}"
    return text


def _bird_str(value) -> str:
    s = str(value)
    if '"' in s or "\\" in s or "\n" in s:
        raise UsageError(f"refusing to put {s!r} into a BIRD config", "use a lab dir without quotes or backslashes")
    return f'"{s}"'


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(layout.shipped("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["y"] = _y
    env.filters["ay"] = _ansible_y
    env.filters["bird_str"] = _bird_str
    return env


def tunnel_device(encapsulation: str, ipip: bool) -> str | None:
    """The node's tunnel device; IPIP falls back to VXLAN where the kernel has no ipip."""
    if encapsulation == "None":
        return None
    if encapsulation.startswith("IPIP") and ipip:
        return "tunl0"
    return "vxlan.calico"


def k8s_version(version: str) -> str:
    # without a patch, kubeadm resolves the newest patch of the minor (or its own version offline)
    return f"v{version}" if version.count(".") == 2 else f"stable-{version}"


def build(plan: Plan, lab: LabDir, ipip: bool = True) -> LabModel:
    """The lab model of a plan on this host (`ipip`: whether the kernel has ipip): every node's
    addresses, block, access, pods and BGP sessions, the routers and networks. `up` builds it once;
    topology-data.json is its dump, the templates take its dict form."""
    t = plan.topology
    kind = traits(t.provider)
    # with networks each node is reached through its own network's bridge
    reach = {n.name: access.for_node(kind, n.ssh, lab, t.name, n.network if t.networks else None) for n in plan.nodes}
    nodes = []
    for n in plan.nodes:
        nodes.append(
            {
                "name": n.name,
                "role": n.role,
                "address": str(n.address),
                "interface": n.interface,
                "block": str(n.block),
                "tunnel_ip": str(n.tunnel_ip) if n.tunnel_ip else None,
                "vtep_mac": n.vtep_mac,
                "labels": n.labels,
                "base_labels": base_labels(n.name, n.role),
                "ssh": reach[n.name].to_data(),
                **({"network": n.network} if n.network is not None else {}),
                "dir": str(lab.node_dir(n.name)),
                "bird_socket": str(lab.bird_socket(n.name)),
                "pods": [
                    {"name": p.name, "ip": str(p.ip), "veth": p.veth, "netns": names.pod_netns(t.name, n.name, p.name)}
                    for p in plan.pods
                    if p.node == n.name
                ],
            }
        )
    _peers(nodes, set(t.calico.route_reflectors))
    routers = _racks(t, kind, lab, nodes, ipip) if _designed(t, ipip) else []
    # only routers labctl builds are the lab's to reach (vm: the user's, only peered with)
    routers = routers if kind.builds_routers else []
    for n in nodes:
        # Calico's BGPPeer selects reflectors by this label (vm); netns reads the list directly
        rr = {"route-reflector": "true"} if n["route_reflector"] and kind.route_reflector_label else {}
        # and the ToR BGPPeer of a network selects that network's nodes by this one
        rack = {NETWORK_LABEL: n["network"]} if "network" in n and kind.route_reflector_label else {}
        n["apply_labels"] = n["labels"] | rr | rack
    return LabModel.model_validate(_topology_data(plan, nodes, routers, ipip) | _exercise_data(t))


def context(plan: Plan, lab: LabDir, ipip: bool = True, model: LabModel | None = None) -> dict:
    """What the templates see: the lab model as a dict (exactly topology-data.json's nodes and
    routers), the topology as `t`, the lab dir's paths, and what follows from them."""
    t = plan.topology
    model = model if model is not None else build(plan, lab, ipip)
    kind = traits(t.provider)
    data = model.to_data()
    nodes, routers = data["nodes"], data.get("routers") or []
    reach = {n["name"]: access.Access.from_data(n["ssh"]) for n in nodes + routers}
    tunnel = model.calico.tunnel_device
    # CrossSubnet: every node here shares one LAN, so routes go straight over it
    cross = t.calico.encapsulation.endswith("CrossSubnet")
    proxy = None
    # a provider that makes the machines may bring the lab's proxy (qemu: the one on the gateway)
    proxy_cfg = t.proxy or (Proxy(http=kind.default_proxy, https=kind.default_proxy) if kind.default_proxy else None)
    if proxy_cfg is not None:
        # what must never go through the proxy: the nodes, the pods, the services, the API
        implied = [
            "localhost",
            "127.0.0.1",
            *([str(t.network.lan)] if t.network is not None else [str(x.lan) for x in t.lans.values()]),
            str(t.kubernetes.pod_subnet),
            str(t.kubernetes.service_subnet),
            ".svc",
            ".cluster.local",
        ]
        implied += [n.address for n in model.nodes]
        proxy = {
            "http": proxy_cfg.http or "",
            "https": proxy_cfg.https or "",
            "no_proxy": ",".join(dict.fromkeys(implied + list(proxy_cfg.no_proxy))),
        }
    return {
        "lab": t.name,
        "proxy": proxy,
        "provider": t.provider,
        # what the templates may ask of the provider (never its name)
        "emulated": kind.emulated,
        "ssh_timeout": kind.ssh_timeout,
        "access": reach,
        "lab_dir": str(lab.root),
        "paths": lab,
        "t": t,
        "lan": model.network.lan,
        "gateway": model.network.gateway,
        "pool": model.calico.pool,
        "nodes": nodes,
        "control_plane": next(n for n in nodes if n["role"] == "control-plane"),
        "workers": [n for n in nodes if n["role"] == "worker"],
        "workloads": [{"name": w.name, "node": w.node, "node_selector": w.node_selector} for w in model.workloads],
        "vteps": [
            {"node": n["name"], "address": n["address"], "tunnel_ip": n["tunnel_ip"], "mac": n["vtep_mac"]}
            for n in nodes
        ],
        "tunnel_device": tunnel,
        "routers": routers,
        "felix": bool(model.calico.felix),  # set only with networks or a chosen calico.bgp
        "route_mode": "direct" if tunnel is None or cross else tunnel,
        "k8s_version": k8s_version(t.kubernetes.version),
        "cri_socket": CRI_SOCKET,
        "python": "/usr/bin/python3",
    }


def _peers(nodes: list[dict], reflectors: set[str]) -> None:
    """Each node's BGP sessions, named as calico-node names them: the full mesh (Mesh_<ip>), or
    with route reflectors, clients to every reflector and reflectors to everyone (Node_<ip>)."""
    for n in nodes:
        n["route_reflector"] = n["name"] in reflectors
        peers = []
        for p in nodes:
            if p is n:
                continue
            proto = p["address"].replace(".", "_")
            if not reflectors:
                peers.append({"name": p["name"], "address": p["address"], "protocol": "Mesh_" + proto, "type": "mesh"})
            elif n["name"] in reflectors:
                kind = "rr" if p["name"] in reflectors else "rr-client"
                peers.append({"name": p["name"], "address": p["address"], "protocol": "Node_" + proto, "type": kind})
            elif p["name"] in reflectors:
                peers.append({"name": p["name"], "address": p["address"], "protocol": "Node_" + proto, "type": "rr"})
        n["peers"] = peers


def _designed(t, ipip: bool) -> bool:
    """Whether the lab carries a routing design (networks, a BGP design, Felix's routes): then each node
    gets its design data (_racks) and the lab's calico block its `bgp` and `felix`."""
    return bool(t.networks) or t.calico.bgp is not None or felix_programs(t, ipip)


def felix_programs(t, ipip: bool) -> bool:
    """VXLAN routes come from Felix (proto 80), not BIRD, as in Calico; IPIP emulated on vxlan.calico stays
    BIRD's (the kernel's ipip is missing, not Felix's VXLAN chosen)."""
    return t.calico.encapsulation.startswith("VXLAN")


def encapsulates(encapsulation: str, same_network: bool) -> bool:
    """Calico's rule: IPIP/VXLAN always; the CrossSubnet modes only towards another network; None never."""
    if encapsulation == "None":
        return False
    return not (encapsulation.endswith("CrossSubnet") and same_network)


def _racks(t, kind, lab: LabDir, nodes: list[dict], ipip: bool) -> list[dict]:
    """With `networks` or a chosen `calico.bgp`: each node's network, gateway, AS, BGP peers (tor, none),
    what programs its pod routes (BIRD's kernel filter per block, or Felix's routes), and the routers."""
    lans = t.lans
    design = t.calico.design
    enc = t.calico.encapsulation
    felix = felix_programs(t, ipip)
    tunnel = tunnel_device(enc, ipip)
    gw_router = {}  # network -> (router, its asn)
    for r, router in (t.routers or {}).items():
        for net, addr in router.interfaces.items():
            if net in lans and addr == lans[net].gateway:
                gw_router[net] = (r, router.asn)
    for n in nodes:
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
            n["peers"] = [
                {"name": r, "address": gw, "protocol": "Node_" + gw.replace(".", "_"), "type": "tor", "asn": asn}
            ]
        n["kernel"] = "felix" if felix else []
        routes = [f"blackhole {n['block']} proto 80"]
        for o in nodes:
            if o is n:
                continue
            same = o.get("network") == net
            native = not encapsulates(enc, same)
            if felix:
                routes.append(
                    f"{o['block']} via {o['address']} dev {n['interface']} proto 80"
                    if native
                    else f"{o['block']} via {o['tunnel_ip']} dev vxlan.calico onlink proto 80"
                )
            elif native:
                n["kernel"].append({"block": o["block"], "action": "accept;"})
            elif tunnel == "tunl0":
                action = f'ifname = "tunl0"; onlink = true; gw = {o["address"]}; accept;'
                n["kernel"].append({"block": o["block"], "action": action})
            else:
                action = f'ifname = "vxlan.calico"; onlink = true; gw = {o["tunnel_ip"]}; accept;'
                n["kernel"].append({"block": o["block"], "action": action})
        if felix:
            n["felix_routes"] = routes
    out = []
    for r, router in (t.routers or {}).items():
        ifaces = [
            {
                "network": net,
                "ifname": net,
                "address": str(addr),
                "prefixlen": lans[net].lan.prefixlen,
                "bridge": names.bridge(kind.links, t.name, net) if kind.links else None,
                "host": str(lans[net].host),
            }
            for net, addr in router.interfaces.items()
        ]
        first = ifaces[0]
        reach = access.for_router(lab, first["bridge"]).to_data()
        out.append(
            {
                "name": r,
                "role": "router",
                "address": first["address"],
                "interface": first["ifname"],
                "asn": router.asn,
                "interfaces": ifaces,
                "ssh": reach,
                "dir": str(lab.node_dir(r)),
                "bird_socket": str(lab.bird_socket(r)),
                "pods": [],
                "peers": [],
            }
        )
    _router_routes(out, lans)
    by_name = {x["name"]: x for x in out}
    for x in out:
        if x["asn"] is None:
            continue
        mine = {i["network"]: i["address"] for i in x["interfaces"]}
        for n in nodes:
            if design == "tor" and n.get("network") in mine and gw_router.get(n["network"], ("",))[0] == x["name"]:
                x["peers"].append(
                    {
                        "name": n["name"],
                        "address": n["address"],
                        "protocol": "Node_" + n["address"].replace(".", "_"),
                        "type": "tor-client",
                        "asn": n["asn"],
                        "local": mine[n["network"]],
                    }
                )
        for y in out:
            shared = [i for i in y["interfaces"] if i["network"] in mine]
            if y is x or y["asn"] is None or not shared:
                continue
            addr = shared[0]["address"]
            x["peers"].append(
                {
                    "name": y["name"],
                    "address": addr,
                    "protocol": "Router_" + addr.replace(".", "_"),
                    "type": "router",
                    "asn": by_name[y["name"]]["asn"],
                    "local": mine[shared[0]["network"]],
                }
            )
    return out


def _router_routes(routers: list[dict], lans: dict) -> None:
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


def tor_peers(ctx: dict) -> list[dict]:
    """bgp: tor as Calico resources: one BGPPeer per network with nodes, its nodes selected by their
    network label, peering with the network's gateway router in the router's AS."""
    out = {}
    for n in ctx["nodes"]:
        for p in n["peers"]:
            if p["type"] == "tor":
                out[n["network"]] = {"network": n["network"], "address": p["address"], "asn": p["asn"]}
    return list(out.values())


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def _topology_data(plan: Plan, nodes: list[dict], routers: list[dict], ipip: bool) -> dict:
    t = plan.topology
    lan = str(t.network.lan) if t.network is not None else ",".join(str(x.lan) for x in t.lans.values())
    return (
        {
            "name": t.name,
            "provider": t.provider,
            "network": {"lan": lan, "gateway": str(t.gateway)},
            "kubernetes": t.kubernetes.model_dump(mode="json"),
            "calico": t.calico.model_dump(mode="json", exclude={"bgp"})
            | {"pool": str(t.pool), "tunnel_device": tunnel_device(t.calico.encapsulation, ipip)}
            | ({"bgp": t.calico.design, "felix": felix_programs(t, ipip)} if _designed(t, ipip) else {}),
            "nodes": nodes,
            "workloads": [
                {"name": p.name, "node": p.node, "ip": str(p.ip), "veth": p.veth, "node_selector": p.node_selector}
                for p in plan.pods
            ],
        }
        | ({"qemu": t.qemu.model_dump(mode="json")} if t.qemu is not None else {})
        | _racks_data(t, routers)
    )


def _racks_data(t, routers: list[dict]) -> dict:
    if not t.networks:
        return {}
    lans = {
        name: {"lan": str(x.lan), "gateway": str(x.gateway), "asn": x.asn, "host": str(x.host)}
        | {"bridge": names.bridge(traits(t.provider).links, t.name, name) if traits(t.provider).links else None}
        for name, x in t.lans.items()
    }
    return {"networks": lans, "routers": routers}


def _exercise_data(t) -> dict:
    """impairments (node, interface, tc spec) and the lab's own checks, only when the topology has them."""
    from labctl.spec import netem
    from labctl.spec.schedule import impairment_targets

    out: dict = {}
    if t.impairments:
        out["impairments"] = [
            {"node": node, "interface": iface, "spec": netem.spec(i.delay, i.jitter, i.loss, i.rate)}
            for i, (node, iface) in zip(t.impairments, impairment_targets(t), strict=True)
        ]
    if t.checks:
        out["checks"] = [c.model_dump(mode="json", exclude_none=True) for c in t.checks]
    return out


def render(
    plan: Plan, lab: LabDir, source: Path | None = None, ipip: bool = True, model: LabModel | None = None
) -> list[Path]:
    """Write every rendered file of the lab (from `model` when the caller built it); returns them in order."""
    env = _env()
    model = model if model is not None else build(plan, lab, ipip)
    ctx = context(plan, lab, model=model)
    try:
        lab.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(lab.root, 0o700)
    except OSError as e:
        raise LabctlError(f"cannot create the lab directory {lab.root}: {e.strerror}", "pick another one") from None
    out: list[Path] = []

    def put(path: Path, template: str, **extra) -> None:
        _write(path, env.get_template(template).render(**ctx, **extra))
        out.append(path)

    if source is not None and source.resolve() != lab.topology.resolve():
        shutil.copyfile(source, lab.topology)
        out.append(lab.topology)
    _write(lab.mark, lab.MARK_TEXT)
    _write(lab.topology_data, model.dump_json())
    out.append(lab.topology_data)
    put(lab.inventory, "ansible-inventory.yml.j2")
    put(lab.ansible_cfg, "ansible.cfg.j2")
    put(lab.ssh_config, "ssh_config.j2")
    put(lab.kubeadm_init, "kubeadm-init.yaml.j2")
    for w in ctx["workers"]:
        put(lab.kubeadm_join(w["name"]), "kubeadm-join.yaml.j2", node=w)
    put(lab.calico_resources, "calico-resources.yaml.j2")
    if plan.topology.calico.route_reflectors or plan.topology.calico.design == "tor":
        put(lab.calico_bgp, "calico-bgp.yaml.j2", tor=tor_peers(ctx))
    if plan.topology.calico.design == "tor":
        put(lab.calico_nodes, "calico-nodes.yaml.j2")
    put(lab.node_labels, "node-labels.yaml.j2")
    if ctx["emulated"]:
        for n in ctx["nodes"]:
            put(lab.bird_conf(n["name"]), "bird.conf.j2", node=n, others=[p for p in ctx["nodes"] if p is not n])
    # the model holds only routers labctl builds on this host (netns, qemu): BIRD runs in them either way
    for r in ctx["routers"]:
        if r["asn"] is not None:
            put(lab.bird_conf(r["name"]), "bird-router.conf.j2", router=r)
    return out
