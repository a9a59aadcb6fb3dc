"""What follows from a valid topology (its plan): node blocks and tunnel IPs, pod addresses and
where each workload lands, the way kube-scheduler and Calico's IPAM would place them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from labctl.spec import calico
from labctl.spec.schema import Node, Ssh, Topology, Workload, merge_ssh
from labctl.spec.yamlsrc import Problem


def base_labels(name: str, role: str) -> dict[str, str]:
    """Labels Kubernetes itself puts on a node."""
    base = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if role == "control-plane":
        base["node-role.kubernetes.io/control-plane"] = ""
    return base


def implicit_labels(name: str, node: Node) -> dict[str, str]:
    return base_labels(name, node.role) | dict(node.labels)


@dataclass(frozen=True)
class PodPlan:
    name: str
    node: str
    ip: IPv4Address
    veth: str  # node side, Calico style: cali + 11 hex chars
    node_selector: dict


@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int
    role: str
    address: IPv4Address
    interface: str
    block: IPv4Network
    tunnel_ip: IPv4Address | None
    vtep_mac: str
    labels: dict  # the user's labels (applied last)
    ssh: Ssh
    network: str | None = None  # with networks: the node's network


@dataclass(frozen=True)
class Plan:
    topology: Topology
    nodes: list[NodePlan]
    pods: list[PodPlan]


def workloads(t: Topology) -> list[Workload]:
    if t.workloads is not None:
        return list(t.workloads)
    return [Workload(name=f"pod-{n}"[:40].rstrip("-"), node_selector={"kubernetes.io/hostname": n}) for n in t.nodes]


class LabelIndex:
    """(key, value) -> nodes carrying it, so matching a selector costs its size, not the lab's."""

    def __init__(self, t: Topology):
        self.order = list(t.nodes)
        self.position = {name: i for i, name in enumerate(self.order)}
        self.by_label: dict[tuple[str, str], set[str]] = {}
        for name, node in t.nodes.items():
            for kv in implicit_labels(name, node).items():
                self.by_label.setdefault(kv, set()).add(name)

    def matching(self, selector: dict[str, str]) -> list[str]:
        if not selector:
            return self.order
        sets = [self.by_label.get(kv, set()) for kv in selector.items()]
        hit = set.intersection(*sets)
        return sorted(hit, key=self.position.__getitem__)


def _schedule(t: Topology, wl: list[Workload]) -> list[tuple[Workload, str]]:
    """Like kube-scheduler's spreading, simply: each workload goes to the matching node with the
    fewest workloads so far, ties broken by node order."""
    load = {n: 0 for n in t.nodes}
    index = LabelIndex(t)
    out = []
    for w in wl:
        candidates = index.matching(w.node_selector)
        if not candidates:
            continue
        best = min(candidates, key=lambda n: load[n])
        load[best] += 1
        out.append((w, best))
    return out


def _plan(t: Topology) -> tuple[Plan | None, list[Problem]]:
    problems = []
    blocks = t.pool.subnets(new_prefix=t.calico.block_size)
    nodes = []
    for i, (name, node) in enumerate(t.nodes.items()):
        block = next(blocks)
        tunnel = None
        if calico.tunnelled(t.calico.encapsulation):
            tunnel = block.network_address + (1 if block.num_addresses > 1 else 0)
        mac = "66:" + ":".join(f"{b:02x}" for b in hashlib.sha1(f"{t.name}/{name}".encode()).digest()[:5])
        nodes.append(
            NodePlan(
                name,
                i,
                node.role,
                node.address,
                t.defaults.interface if node.interface is None else node.interface,
                block,
                tunnel,
                mac,
                dict(node.labels),
                merge_ssh(t.defaults.ssh, node.ssh),
                node.network,
            )
        )
    pods = []
    by_node = {n.name: n for n in nodes}
    used: dict[str, int] = {}
    wl = workloads(t)
    for w, node_name in _schedule(t, wl):
        n = by_node[node_name]
        k = used.get(node_name, 0)
        used[node_name] = k + 1
        first = 2 if n.tunnel_ip is not None else 1
        if first + k >= n.block.num_addresses - 1:
            idx = wl.index(w)
            path = ("workloads", idx) if t.workloads is not None else ("calico", "block_size")
            problems.append(
                Problem(
                    path,
                    f"block {n.block} of node {node_name} has no address left for {w.name}",
                    "use a smaller calico.block_size",
                )
            )
            continue
        ip = n.block.network_address + first + k
        veth = "cali" + hashlib.sha1(f"{t.name}.{w.name}".encode()).hexdigest()[:11]
        pods.append(PodPlan(w.name, node_name, ip, veth, dict(w.node_selector)))
    return Plan(t, nodes, pods), problems


def _planned(t: Topology) -> tuple[Plan | None, list[Problem]]:
    # a topology is frozen, so its plan is computed once and kept on it: load checks the plan's
    # problems, and `up`/render take the same plan without planning again
    if t._plan is None:
        t._plan = _plan(t)
    return t._plan


def plan_problems(t: Topology) -> list[Problem]:
    return _planned(t)[1]


def plan(t: Topology) -> Plan:
    return _planned(t)[0]


def impairment_targets(t: Topology) -> list[tuple[str, str]]:
    """(node, interface) of each impairment, the interface defaulting to the node's LAN NIC."""
    out = []
    for imp in t.impairments or []:
        node, _, iface = imp.node.partition(":")
        n = t.nodes.get(node)
        out.append((node, iface or (n.interface or t.defaults.interface if n else "")))
    return out
