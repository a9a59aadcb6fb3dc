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
from labctl.plan import bgp, layout, names
from labctl.plan.layout import LabDir
from labctl.plan.model import LabModel
from labctl.spec import calico, netem
from labctl.spec.providers import traits
from labctl.spec.schedule import Plan, base_labels, impairment_targets
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
    bgp.peers(nodes, set(t.calico.route_reflectors))
    routers = bgp.racks(t, kind, lab, nodes, ipip) if bgp.designed(t) else []
    # only routers labctl builds are the lab's to reach (vm: the user's, only peered with)
    routers = routers if kind.builds_routers else []
    for r in routers:
        r["ssh"] = access.for_router(lab, r["interfaces"][0]["bridge"]).to_data()
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
    proxy = _proxy(t, kind, [n.address for n in model.nodes])
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
        # CrossSubnet: every node here shares one LAN, so routes go straight over it
        "route_mode": calico.route_mode(t.calico.encapsulation, tunnel),
        "encapsulation_mode": calico.mode(t.calico.encapsulation, tunnel),
        "k8s_version": k8s_version(t.kubernetes.version),
        "cri_socket": CRI_SOCKET,
        "python": "/usr/bin/python3",
    }


def _proxy(t, kind, addresses: list[str]) -> dict | None:
    """The lab's proxy settings for the nodes, if it has a proxy."""
    # a provider that makes the machines may bring the lab's proxy (qemu: the one on the gateway)
    proxy_cfg = t.proxy or (Proxy(http=kind.default_proxy, https=kind.default_proxy) if kind.default_proxy else None)
    if proxy_cfg is None:
        return None
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
    implied += addresses
    return {
        "http": proxy_cfg.http or "",
        "https": proxy_cfg.https or "",
        "no_proxy": ",".join(dict.fromkeys(implied + list(proxy_cfg.no_proxy))),
    }


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def _topology_data(plan: Plan, nodes: list[dict], routers: list[dict], ipip: bool) -> dict:
    t = plan.topology
    lan = str(t.network.lan) if t.network is not None else ",".join(str(x.lan) for x in t.lans.values())
    design = {"bgp": t.calico.design, "felix": calico.felix_programs(t.calico.encapsulation)} if bgp.designed(t) else {}
    return (
        {
            "name": t.name,
            "provider": t.provider,
            "network": {"lan": lan, "gateway": str(t.gateway)},
            "kubernetes": t.kubernetes.model_dump(mode="json"),
            "calico": t.calico.model_dump(mode="json", exclude={"bgp"})
            | {"pool": str(t.pool), "tunnel_device": calico.tunnel_device(t.calico.encapsulation, ipip)}
            | design,
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
        | {"bridge": names.lab_bridge(traits(t.provider).links, t.name, name)}
        for name, x in t.lans.items()
    }
    return {"networks": lans, "routers": routers}


def _exercise_data(t) -> dict:
    """impairments (node, interface, tc spec) and the lab's own checks, only when the topology has them."""
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
        put(lab.calico_bgp, "calico-bgp.yaml.j2", tor=bgp.tor_peers(ctx["nodes"]))
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
