"""What `labctl up` changes on a lab that is already there.

The old side is the lab's topology-data.json, the new side the topology being applied. A node
whose address, interface, role or block changes is replaced (removed, then added): those decide
its namespace, NIC and BGP identity. Labels change in place. A workload that changes node or IP
is re-created."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from labctl.errors import UsageError
from labctl.plan.model import LabModel, Node
from labctl.spec import calico, netem

IDENTITY = ("address", "interface", "role", "block", "tunnel_ip", "vtep_mac")


@dataclass
class Change:
    op: str  # "+" add, "-" remove, "~" change
    kind: str  # "node" | "workload" | "lab"
    name: str
    detail: str = ""


@dataclass
class Diff:
    changes: list[Change] = field(default_factory=list)
    removed_nodes: list[str] = field(default_factory=list)  # includes replaced nodes (old side)
    hosts: dict[str, list[str]] = field(default_factory=dict)  # play -> hosts; absent = all

    @property
    def empty(self) -> bool:
        return not self.changes

    def extravars(self) -> dict:
        return {f"labctl_hosts_{play}": hosts for play, hosts in self.hosts.items()}


def _pods(m: LabModel) -> dict[str, dict[str, tuple]]:
    return {n.name: {p.name: (p.ip, p.veth) for p in n.pods} for n in m.nodes}


def diff(old: LabModel | None, new: LabModel) -> Diff:
    d = Diff()
    if old is None:
        d.changes = [Change("+", "node", n.name, f"{n.address}, block {n.block}") for n in new.nodes]
        d.changes += [Change("+", "workload", w.name, f"on {w.node} ({w.ip})") for w in new.workloads]
        return d
    d.changes = _lab_changes(old, new)
    before = {n.name: n for n in old.nodes}
    after = {n.name: n for n in new.nodes}
    node_changes, added, replaced, relabelled = _node_changes(old, new)
    gone = [name for name in before if name not in after]
    d.changes += node_changes + [Change("-", "node", name, before[name].address) for name in gone]
    d.changes += _workload_changes(old, new) + _impairment_changes(old, new)
    if d.empty:
        return d  # nothing changed: `up` converges everything (and so repairs drift)
    d.removed_nodes = gone + replaced
    d.hosts = _hosts(old, new, added + replaced, gone, relabelled)
    return d


def _lab_changes(old: LabModel, new: LabModel) -> list[Change]:
    """What only a new lab can change: the provider, the Kubernetes version, the LAN(s)."""
    out = []
    for key in ("provider",):
        o, n = getattr(old, key), getattr(new, key)
        if o != n:
            out.append(Change("~", "lab", key, f"{o} -> {n} (run `labctl down` first)"))
    # labctl installs a version, it does not upgrade one: a new patch would change the kubelet
    # under a control plane that `kubeadm upgrade` never saw, a new minor would be ignored
    old_k8s, new_k8s = old.kubernetes.version, new.kubernetes.version
    if old_k8s != new_k8s:
        out.append(
            Change(
                "~",
                "lab",
                "kubernetes.version",
                f"{old_k8s} -> {new_k8s} (labctl does not upgrade clusters: `labctl down` and `up` again, "
                f"or upgrade with `kubeadm upgrade` by hand and keep the topology at {old_k8s})",
            )
        )
    # the LAN and its gateway are the bridge's address and every node's default route, set when
    # the lab is created: renumbering the nodes alone would cut them off from the host
    o_net, n_net = old.network.to_data(), new.network.to_data()
    if old.networks and new.networks:  # several networks: `network` only sums them up; they may be added
        out += _rack_changes(old, new)
    elif o_net != n_net:
        what = ", ".join(
            f"{k} {o_net.get(k)} -> {n_net.get(k)}"
            for k in dict.fromkeys([*n_net, *o_net])
            if o_net.get(k) != n_net.get(k)
        )
        out.append(Change("~", "lab", "network", f"{what} (run `labctl down`, then `labctl up`)"))
    return out


def _node_changes(old: LabModel, new: LabModel) -> tuple[list[Change], list[str], list[str], list[str]]:
    """The nodes added, replaced and relabelled (with their changes)."""
    out: list[Change] = []
    lab_wide = old.calico.to_data() != new.calico.to_data()
    before = {n.name: n for n in old.nodes}
    added, replaced, relabelled = [], [], []
    for n in new.nodes:
        name, o = n.name, before.get(n.name)
        if o is None:
            added.append(name)
            out.append(Change("+", "node", name, f"{n.address}, block {n.block}"))
        elif lab_wide or any(getattr(o, k) != getattr(n, k) for k in IDENTITY):
            replaced.append(name)
            what = [f"{k} {getattr(o, k)} -> {getattr(n, k)}" for k in IDENTITY if getattr(o, k) != getattr(n, k)]
            what = what or ["lab network settings"]
            out.append(Change("~", "node", name, "replaced: " + ", ".join(what)))
        elif o.labels != n.labels:
            relabelled.append(name)
            out.append(Change("~", "node", name, f"labels {o.labels} -> {n.labels}"))
    return out, added, replaced, relabelled


def _workload_changes(old: LabModel, new: LabModel) -> list[Change]:
    out = []
    old_w = {w.name: w for w in old.workloads}
    for w in new.workloads:
        o = old_w.get(w.name)
        if o is None:
            out.append(Change("+", "workload", w.name, f"on {w.node} ({w.ip})"))
        elif (o.node, o.ip) != (w.node, w.ip):
            out.append(Change("~", "workload", w.name, f"{o.node} ({o.ip}) -> {w.node} ({w.ip})"))
    for name in old_w.keys() - {w.name for w in new.workloads}:
        out.append(Change("-", "workload", name, f"from {old_w[name].node}"))
    return out


def _hosts(old: LabModel, new: LabModel, fresh: list[str], gone: list[str], relabelled: list[str]) -> dict:
    """play -> the nodes it must run on for these changes (fresh: added or replaced nodes)."""
    before = {n.name: n for n in old.nodes}
    after = {n.name: n for n in new.nodes}
    old_pods, new_pods = _pods(old), _pods(new)
    # with VXLAN every node holds a VTEP entry and a BIRD next-hop mapping per peer node, so
    # membership touches all of them; otherwise only nodes whose BGP peers changed
    per_peer = bool(fresh or gone) and calico.vteps(new.calico.tunnel_device)

    def peers(n: Node) -> set[tuple]:
        # the peer's AS too: a router's new asn is in its peers' BIRD config ("Bad peer AS" otherwise)
        return {(p.name, p.address, p.type, p.asn) for p in n.peers}

    old_peers = {n: peers(before[n]) if n in before and n not in fresh else set() for n in after}

    def changed(n: str, key: str) -> bool:  # the node's own routes to the others' blocks (`networks:` labs)
        return n in before and getattr(before[n], key) != getattr(after[n], key)

    hosts = {"network": [n for n in after if n in fresh or per_peer or changed(n, "felix_routes")]}
    hosts["bgp"] = [
        n for n in after if n in fresh or per_peer or peers(after[n]) != old_peers[n] or changed(n, "kernel")
    ]
    hosts["workloads"] = [n for n in after if n in fresh or old_pods.get(n) != new_pods.get(n)]
    # a session is one TCP connection seen from both ends: the fresh nodes' waits cover every new
    # session of the others, unless one has a new peer that is not fresh
    hosts["wait"] = [n for n in after if n in fresh or {p[0] for p in peers(after[n]) - old_peers[n]} - set(fresh)]
    hosts["labels"] = [n for n in after if n in fresh or n in relabelled]
    return hosts


def _rack_changes(old: LabModel, new: LabModel) -> list[Change]:
    """`networks:` labs: a new network (a bridge) and a new router or router interface are added in place;
    a network or router that changes or goes, or an interface that moves, needs the lab built afresh."""
    out: list[Change] = []
    o_nets, n_nets = old.networks or {}, new.networks or {}
    for name, net in n_nets.items():
        if name not in o_nets:
            out.append(Change("+", "network", name, f"{net.lan}, gateway {net.gateway}"))
        elif o_nets[name] != net:
            o, n = o_nets[name].to_data(), net.to_data()
            what = ", ".join(f"{k} {o.get(k)} -> {v}" for k, v in n.items() if o.get(k) != v)
            out.append(Change("~", "lab", f"networks.{name}", f"{what} (run `labctl down`, then `labctl up`)"))
    out += [
        Change("~", "lab", f"networks.{x}", "removed (run `labctl down`, then `labctl up`)")
        for x in o_nets.keys() - n_nets.keys()
    ]
    o_r = {r.name: r for r in old.routers or []}
    for r in new.routers or []:
        o = o_r.get(r.name)
        ifaces = {i.network: i.address for i in r.interfaces}
        if o is None:
            out.append(Change("+", "router", r.name, ", ".join(f"{k} {v}" for k, v in ifaces.items())))
            continue
        o_ifaces = {i.network: i.address for i in o.interfaces}
        moved = [k for k in o_ifaces if ifaces.get(k) != o_ifaces[k]]
        if not moved and o.address != r.address:  # its first interface: where its sshd listens
            moved = [next(iter(ifaces))]
        if moved:
            what = ", ".join(f"{k} {o_ifaces[k]} -> {ifaces.get(k, 'none')}" for k in moved)
            out.append(Change("~", "lab", f"routers.{r.name}", f"{what} (run `labctl down`, then `labctl up`)"))
        added = [f"+ {k} {v}" for k, v in ifaces.items() if k not in o_ifaces]
        if o.asn != r.asn:
            added.append(f"asn {o.asn} -> {r.asn}")
        if added and not moved:
            out.append(Change("~", "router", r.name, ", ".join(added)))
    gone = o_r.keys() - {r.name for r in new.routers or []}
    out += [Change("~", "lab", f"routers.{x}", "removed (run `labctl down`, then `labctl up`)") for x in sorted(gone)]
    return out


def _impairment_changes(old: LabModel, new: LabModel) -> list[Change]:
    """Topology impairments: applied by `up` after the plays, on their nodes only (no play reruns)."""

    def by_target(m: LabModel) -> dict[str, str]:
        return {f"{i.node}:{i.interface}": netem.summary(i.spec) for i in m.impairments or []}

    o, n = by_target(old), by_target(new)
    out = [Change("+", "impairment", k, v) for k, v in n.items() if k not in o]
    out += [Change("~", "impairment", k, f"{o[k]} -> {v}") for k, v in n.items() if k in o and o[k] != v]
    return out + [Change("-", "impairment", k, f"{v} cleared") for k, v in o.items() if k not in n]


def refusal(d: Diff, lab: str) -> UsageError | None:
    """What `up` refuses to apply in place (and `up --dry-run` reports the same way)."""
    fixed = [c.name for c in d.changes if c.kind == "lab"]
    if not fixed:
        return None
    return UsageError(
        f"lab {lab!r} cannot change {', '.join(fixed)} in place",
        "run `labctl down`, then `labctl up` with the new topology",
    )


def format(d: Diff, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps({"changes": [asdict(c) for c in d.changes], "hosts": d.hosts}, indent=2)
    if d.empty:
        return "no changes: `up` would converge every node to the topology"
    lines = [f"{c.op} {c.kind} {c.name}" + (f": {c.detail}" if c.detail else "") for c in d.changes]
    if d.hosts:
        lines.append("")
        for play, hosts in d.hosts.items():
            lines.append(f"  {play:<10} {', '.join(hosts) if hosts else '(skipped)'}")
    return "\n".join(lines)
