"""`labctl verify`: the lab's network checked from live nodes; exit 0 only if every check passes.

collect() reads the nodes over SSH (and, on vm labs, the Kubernetes API through the control
plane); evaluate() turns what was read into checks, with no I/O, the same for both providers
wherever the lab works the same way."""

from __future__ import annotations

import ipaddress
import shlex
import time
from dataclasses import asdict, dataclass, field

from labctl import output
from labctl.host import routers
from labctl.live import iproute
from labctl.live import nodes as live
from labctl.observe import labchecks, nodefacts
from labctl.observe import pods as podinfo
from labctl.observe.checks import Check, skip
from labctl.plan.model import LabModel, Node
from labctl.spec import calico
from labctl.spec.providers import traits

WORKLOAD_LABEL = podinfo.WORKLOAD_LABEL
# what verify asks the cluster DNS from a pod: the API server's Service, whose ClusterIP is the first
# address of the service subnet (kube-apiserver allocates it so)
DNS_NAME = "kubernetes.default.svc.cluster.local"
# on each vm node: the keys of the labels labctl set there (node_labels role), so a label the topology
# drops is removed by the next `up` and noticed by verify until then
OWNED_LABELS = "labctl.io/labels"


@dataclass
class Observed:
    facts: dict  # node name -> NodeFacts
    workloads: list[dict]  # name, node, ip: where each workload really is
    pings: dict[str, str] = field(default_factory=dict)  # "a->b" -> command output ending in rc=N
    dns: str | None = None  # vm: output of a cluster DNS lookup from a pod
    dns_from: str = ""  # the workload it ran in
    routers: dict = field(default_factory=dict)  # lab router (`networks:`) -> routes, sessions or error


ALL_PAIRS_UP_TO = 12


def _ping_pairs(workloads: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of workloads on different nodes, pinged one way (the reply tests the way back): every
    pair in a small lab; in a big one a ring, each workload to the next one on another node, so
    every node's pods send and receive once and the count grows with the lab, not its square."""
    ws = [w for w in workloads if w["node"]]
    if len(ws) <= ALL_PAIRS_UP_TO:
        return [(a, b) for i, a in enumerate(ws) for b in ws[i + 1 :] if a["node"] != b["node"]]
    out = []
    for i, a in enumerate(ws):
        b = next((ws[(i + k) % len(ws)] for k in range(1, len(ws)) if ws[(i + k) % len(ws)]["node"] != a["node"]), None)
        if b is not None:
            out.append((a, b))
    return out


_api_workloads = podinfo.api_pods  # the pods labctl made, as the API server places and addresses them


def collect(lab) -> tuple[LabModel, Observed]:
    model = lab.model()
    if traits(model.provider).labels_in_kubernetes:
        return model, _collect_cluster(lab, model)
    netns = {p.name: p.netns for n in model.nodes for p in n.pods}
    # netns: labctl placed the workloads, so the plan is where they are (the probes check it)
    workloads = [w.to_data() for w in model.workloads]
    # the pings ride in each source node's probe session
    extra: dict[str, dict[str, str]] = {}
    for a, b in _ping_pairs(workloads):
        extra.setdefault(a["node"], {})[f"{a['name']}->{b['name']}"] = (
            f"ip netns exec {shlex.quote(netns[a['name']])} ping -c1 -W1 -q {shlex.quote(b['ip'])}"
        )
    facts = {f.name: f for f in nodefacts.gather_lab(lab, model, extra, names=True)}
    pings = {k: v for f in facts.values() for k, v in f.extra.items()}
    routers_read = routers.read_all(lab, model)
    return model, Observed(facts, workloads, pings, routers=routers_read)


def _collect_cluster(lab, model: LabModel) -> Observed:
    """vm labs: the nodes, then pings and a DNS lookup from pods through the control plane's kubectl."""
    facts = {f.name: f for f in nodefacts.gather_lab(lab, model, names=True)}
    cp = model.control_plane
    workloads = _api_workloads(facts[cp.name].k8s)
    obs = Observed(facts, workloads)
    if not (facts[cp.name].reachable and workloads):
        return obs
    k = f"{live.sudo(cp)}{live.KUBECTL}"

    def in_pod(w: dict, cmd: str) -> str:  # inside the pod's own container (its image has ping and nslookup)
        return f"{k} exec -n {shlex.quote(w.get('namespace') or 'default')} {shlex.quote(w['pod'])} -- {cmd}"

    cmds = {
        f"{a['name']}->{b['name']}": in_pod(a, f"ping -c1 -W2 -q {shlex.quote(b['ip'])}")
        for a, b in _ping_pairs(workloads)
    }
    # through the pod's resolv.conf, i.e. the cluster DNS (kube-dns Service) as every pod uses it
    running = next((w for w in workloads if w["node"] and w["ip"]), None)
    if running:
        cmds["dns"], obs.dns_from = in_pod(running, f"nslookup {DNS_NAME}"), running["name"]
    with live.NodeShell(lab.dir, cp) as s:
        for key, cmd in cmds.items():
            rc, out, err = s.run(f"{cmd} 2>&1", timeout=30)
            text = f"{out}{err}rc={rc}\n"
            if key == "dns":
                obs.dns = text
            else:
                obs.pings[key] = text
    return obs


@dataclass
class View:
    """What evaluate's steps share: the lab data, what was read, and what follows from both."""

    model: LabModel
    obs: Observed
    cluster: bool  # a Kubernetes API answers for labels, readiness, placement (vm labs)
    api: dict  # the API's nodes, pods and daemonsets (vm), read through the control plane
    api_from: str  # the node the API was read through
    labels: dict  # node -> labels as the node has them now
    blocks: dict  # node -> the block it really announces (Calico IPAM picks them on vm labs)

    def down(self, node: str) -> bool:
        return not self.obs.facts[node].reachable

    @property
    def api_down(self) -> bool:
        return self.cluster and self.down(self.api_from)


def _view(model: LabModel, obs: Observed) -> View:
    nodes, facts = model.nodes, obs.facts
    cluster = traits(model.provider).labels_in_kubernetes
    cp = next((n.name for n in nodes if n.role == "control-plane"), "")
    api = facts[cp].k8s if cluster and cp in facts else {}
    api_nodes = {i["metadata"]["name"]: i for i in api.get("items", []) if i.get("kind") == "Node"}
    labels = {
        n.name: (api_nodes.get(n.name, {}).get("metadata", {}).get("labels") or {}) if cluster else facts[n.name].labels
        for n in nodes
    }
    blocks = {n.name: facts[n.name].block or n.block for n in nodes}
    return View(model, obs, cluster, api, cp, labels, blocks)


def evaluate(model: LabModel, obs: Observed) -> list[Check]:
    v = _view(model, obs)
    out: list[Check] = []
    for n in model.nodes:
        out += _node_checks(v, n)
    if v.cluster:
        out.append(_calico_node_check(v))
    out += _router_checks(v)
    out += _placement_checks(v)
    out += _pod_route_checks(v)
    out += _ping_checks(v)
    if v.cluster and obs.workloads:
        out.append(_dns_check(v))
    return out


def answers(nslookup: str) -> list[str]:
    """The addresses an `nslookup NAME` printed for NAME (busybox and bind9 both print them as
    `Address: IP` or `Address N: IP` lines after `Name:`), not its server's `Address: IP#53` / `IP:53`."""
    out, named = [], False
    for line in nslookup.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "Name":
            named = True
        elif named and key.strip().startswith("Address") and val.strip():
            out.append(val.split()[0])
    return out


def _dns_check(v: View) -> Check:
    """kubernetes.default resolves, from a pod through the cluster DNS, to the API server's ClusterIP
    (the exit code alone says little: busybox's nslookup also asks AAAA, and an empty answer to that
    can fail it while the A answer is right)."""
    if v.api_down:
        return skip("dns", "kubernetes.default", v.api_from)
    want = str(next(ipaddress.ip_network(v.model.kubernetes.service_subnet).hosts()))
    text = v.obs.dns or ""
    got = answers(text)
    src = v.obs.dns_from or "a pod"
    if want in got:
        return Check("dns", "kubernetes.default", True, f"{DNS_NAME} -> {want} from {src}")
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip() and not ln.startswith("rc=")), "")
    why = f"answered {', '.join(got)}, not {want}" if got else f"no answer ({last or 'no output'})"
    return Check("dns", "kubernetes.default", False, f"{DNS_NAME} from {src}: {why}")


def _node_checks(v: View, n: Node) -> list[Check]:
    """What one node must show: SSH, its name, BGP, routes, VTEPs, names of the others, labels."""
    name, f = n.name, v.obs.facts[n.name]
    out = [Check("ssh", name, f.reachable, f"hostname {f.hostname}" if f.reachable else f"unreachable: {f.error}")]
    if v.cluster:
        out.append(skip("ready", name, v.api_from) if v.api_down else _ready_check(v, name))
    read = ["hostname", "bgp", "routes"]
    read += ["vtep"] if calico.vteps(v.model.calico.tunnel_device) else []
    read += ["names"] + ([] if v.cluster else ["labels"])
    if not f.reachable:
        out += [skip(c, name, name) for c in read]
        if v.cluster:
            out.append(skip("labels", name, v.api_from) if v.api_down else _labels_check(v, n))
        return out
    if f.hostname != name:
        out.append(Check("hostname", name, False, f"hostname is {f.hostname!r}"))
    out.append(_bgp_check(n, f, v.model.calico.bgp or "mesh"))
    out.append(_routes_check(v, n, f))
    if "vtep" in read:
        out.append(_vtep_check(v, n, f))
    if f.names is not None:
        out.append(_names_check(v, n, f))
    out.append(skip("labels", name, v.api_from) if v.api_down else _labels_check(v, n))
    return out


def _router_checks(v: View) -> list[Check]:
    """Each lab router: SSH, its BGP sessions, and under encapsulation None a route to every block, since
    pod packets then cross it unwrapped; tunnelled ones carry the nodes' addresses, which it always routes."""
    out = []
    enc = v.model.calico.encapsulation
    for r in v.model.routers or []:
        name = r.name
        got = v.obs.routers.get(name, {"error": "not read", "routes": [], "sessions": None})
        if got["error"]:
            out.append(Check("ssh", name, False, f"unreachable: {got['error']}"))
            continue
        if got["sessions"] is not None and r.peers:
            up = {s.name for s in got["sessions"] if s.established}
            bad = [p.name for p in r.peers if p.protocol not in up]
            detail = f"{len(r.peers) - len(bad)}/{len(r.peers)} Established" + (
                f"; not: {', '.join(bad)}" if bad else ""
            )
            out.append(Check("bgp", name, not bad, detail))
        routed = {x.get("dst") for x in got["routes"] if x.get("type", "unicast") == "unicast"}
        if calico.encapsulates(enc, same_network=False):  # a router is always between two networks
            detail = f"pod traffic crosses {name} encapsulated ({enc}, between node addresses): no pod routes needed"
            out.append(Check("router-routes", name, True, detail))
            continue
        missing = [f"{v.blocks[n.name]} ({n.name})" for n in v.model.nodes if v.blocks[n.name] not in routed]
        if missing:
            why = "with encapsulation None pod packets cross the router unencapsulated"
            how = (
                "its BGP sessions must be up"
                if v.model.calico.bgp == "tor"
                else "only bgp: tor (nodes peering with their rack's router) teaches it the pod blocks"
            )
            detail = f"{name} has no route to {', '.join(missing)}: {why}, and {how}"
        else:
            detail = f"{len(v.model.nodes)} pod blocks routed (learned over BGP from the nodes)"
        out.append(Check("router-routes", name, not missing, detail))
    return out


def _ready_check(v: View, name: str) -> Check:
    node = next((i for i in v.api.get("items", []) if i.get("kind") == "Node" and i["metadata"]["name"] == name), {})
    cond = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    ready = cond.get("Ready") == "True"
    return Check("ready", name, ready, "Ready" if ready else f"Ready={cond.get('Ready', 'not in the API')}")


def _bgp_check(n: Node, f, design: str = "mesh") -> Check:
    peers = n.peers
    if design == "none":
        return Check("bgp", n.name, True, "no BGP (bgp: none): Felix programs the VXLAN routes")
    sessions = {s.name: s for s in f.sessions}
    bad = [p.name for p in peers if not (sessions.get(p.protocol) and sessions[p.protocol].established)]
    detail = (
        f"{len(peers) - len(bad)}/{len(peers)} Established"
        + (f"; not: {', '.join(bad)}" if bad else "")
        + ("" if f.bird_running else "; BIRD not running")
    )
    return Check("bgp", n.name, not bad and f.bird_running, detail)


def _routes_check(v: View, n: Node, f) -> Check:
    peers: list = n.peers
    if v.model.calico.bgp is not None:  # networks/tor/none: every other node's block, whoever taught it
        peers = [p for p in v.model.nodes if p.name != n.name]
    routed = {r.get("dst") for r in f.routes if r.get("type", "unicast") == "unicast"}
    missing = [v.blocks[p.name] for p in peers if v.blocks[p.name] not in routed]
    detail = f"no route to {', '.join(missing)}" if missing else f"{len(peers)} peer blocks routed"
    return Check("routes", n.name, not missing, detail)


def _vtep_check(v: View, n: Node, f) -> Check:
    """VXLAN: for every other node, the neighbour entry (its tunnel IP -> its VTEP MAC) and the fdb
    entry (that MAC -> its LAN address) on vxlan.calico; without them the tunnel cannot send."""
    if not calico.vteps(f.tunnel_device) or not f.vtep_mac:
        return Check("vtep", n.name, False, "no vxlan.calico device with a tunnel IP and a MAC")
    neigh = {(x.get("dst"), x.get("lladdr")) for x in f.neigh}
    fdb = {(x.get("mac"), x.get("dst")) for x in f.fdb}
    problems, count = [], 0
    for p in v.model.nodes:
        pf = v.obs.facts[p.name]
        if p.name == n.name or not (pf.reachable and pf.vtep_mac and pf.tunnel_ip):
            continue  # a peer we could not read: its VTEP is unknown (its own row says why)
        count += 1
        if (pf.tunnel_ip, pf.vtep_mac) not in neigh:
            problems.append(f"no neighbour entry for {pf.tunnel_ip} on vxlan.calico ({p.name}'s VTEP {pf.vtep_mac})")
        if (pf.vtep_mac, p.address) not in fdb:
            problems.append(f"no fdb entry for {pf.vtep_mac} -> {p.address} on vxlan.calico ({p.name})")
    detail = "; ".join(problems) if problems else f"{count} peer VTEPs (neighbour and fdb entries)"
    return Check("vtep", n.name, not problems, detail)


def _names_check(v: View, n: Node, f) -> Check:
    """Every other node's name resolves on this node to that node's address (its /etc/hosts)."""
    others = [p for p in v.model.nodes if p.name != n.name]
    bad = []
    for p in others:
        got = f.names.get(p.name)
        if got is None:
            bad.append(f"{p.name} does not resolve")
        elif got != p.address:
            bad.append(f"{p.name} resolves to {got}, not {p.address}")
    detail = "; ".join(bad) if bad else f"{len(others)} node names resolve"
    return Check("names", n.name, not bad, detail)


def _labels_check(v: View, n: Node) -> Check:
    want, have = n.labels, v.labels[n.name]
    # Kubernetes adds labels of its own; netns nodes carry exactly the declared ones
    ok = all(have.get(k) == val for k, val in want.items()) if v.cluster else have == want
    # a label labctl set earlier and the topology no longer declares
    extra = sorted(k for k in have if k in _owned_labels(v, n.name) and k not in n.apply_labels) if v.cluster else []
    if ok and extra:
        return Check("labels", n.name, False, f"labctl's earlier label(s) still set: {', '.join(extra)}")
    detail = (
        (",".join(f"{k}={val}" for k, val in want.items()) or "(none)") if ok else f"applied {have}, declared {want}"
    )
    return Check("labels", n.name, ok, detail)


def _owned_labels(v: View, node: str) -> set[str]:
    item = next((i for i in v.api.get("items", []) if i.get("kind") == "Node" and i["metadata"]["name"] == node), {})
    owned = (item.get("metadata", {}).get("annotations") or {}).get(OWNED_LABELS, "")
    return {k for k in owned.split(",") if k}


def _calico_node_check(v: View) -> Check:
    if v.api_down:
        return skip("calico-node", "calico-system", v.api_from)
    items = v.api.get("items", [])
    ds = next((i for i in items if i.get("kind") == "DaemonSet" and i["metadata"]["name"] == "calico-node"), None)
    st = (ds or {}).get("status", {})
    ready = ds is not None and st.get("numberReady", 0) == st.get("desiredNumberScheduled", -1) > 0
    detail = f"{st.get('numberReady', 0)}/{st.get('desiredNumberScheduled', 0)} ready" if ds else "no DaemonSet"
    return Check("calico-node", "calico-system", ready, detail)


def _placement_checks(v: View) -> list[Check]:
    by_name = {n.name: n for n in v.model.nodes}
    placed = {w["name"]: w for w in v.obs.workloads}
    out = []
    for w in v.model.workloads:
        where = placed.get(w.name, {}).get("node")
        # where it runs comes from the API (vm) or from the node's labels file (netns)
        unread = v.api_from if v.api_down else (where if where in by_name and not v.cluster and v.down(where) else "")
        if unread:
            out.append(skip("placement", w.name, unread))
            continue
        if not where or where not in by_name:
            out.append(Check("placement", w.name, False, "not running"))
            continue
        applied = by_name[where].base_labels | v.labels[where]  # labels as the node has them now
        mismatch = {k: val for k, val in w.node_selector.items() if applied.get(k) != val}
        detail = f"on {where}" + (f": node lacks {mismatch}" if mismatch else "")
        out.append(Check("placement", w.name, not mismatch, detail))
    return out


def _veth(w: dict) -> str:
    """The veth a workload's /32 must use: the planned one labctl made (netns workloads carry it), or the
    one Calico's CNI plugin named for the API's pod (cali + hash of namespace.pod); another one is stale."""
    if w.get("veth"):
        return w["veth"]
    return podinfo.calico_veth(w.get("namespace") or "default", w["pod"]) if w.get("pod") else ""


def _pod_route_checks(v: View) -> list[Check]:
    """Each pod's node routes its /32 to it: without it nothing reaches the pod."""
    out = []
    for w in v.obs.workloads:
        veth = _veth(w)
        node = w.get("node")
        if not node or node not in v.obs.facts or not w.get("ip"):
            continue  # placement says "not running"
        if v.down(node):
            out.append(skip("pod-route", w["name"], node))
            continue
        r = iproute.host_route(v.obs.facts[node].routes, w["ip"])
        if r is None:
            out.append(Check("pod-route", w["name"], False, f"no /32 route for {w['name']} {w['ip']} on {node}"))
        elif veth and r.get("dev") != veth:
            detail = f"{node} routes {w['name']} {w['ip']} to {r.get('dev')}, not its veth {veth}"
            out.append(Check("pod-route", w["name"], False, detail))
        else:
            out.append(Check("pod-route", w["name"], True, f"{w['ip']} dev {r.get('dev')} on {node}"))
    return out


def _ping_checks(v: View) -> list[Check]:
    out = []
    for a, b in _ping_pairs(v.obs.workloads):
        key = f"{a['name']}->{b['name']}"
        # the ping runs on the source's node (netns) or through the control plane (vm)
        sender = v.api_from if v.cluster else a["node"]
        if v.down(sender):
            out.append(skip("ping", key, sender))
            continue
        text = v.obs.pings.get(key, "")
        ok = "rc=0" in text
        rtt = next(
            (x.split("=")[1].split("/")[1] for x in text.splitlines() if x.startswith(("rtt", "round-trip"))), ""
        )
        out.append(Check("ping", key, ok, f"{a['ip']} -> {b['ip']}" + (f" {rtt} ms" if ok else " no reply")))
    return out


def run_checks(lab, only: str | None = None) -> list[Check]:
    """The built-in checks, then the topology's own (`checks:`); only: "builtin" or "checks"."""
    out = [] if only == "checks" else evaluate(*collect(lab))
    if only != "builtin":
        out += labchecks.run(lab)
    return out


def verify(lab, wait: float = 5.0, only: str | None = None) -> list[Check]:
    """Checks, repeated until all pass or `wait` seconds are over (BGP may still be converging)."""
    deadline = time.monotonic() + wait
    while True:
        checks = run_checks(lab, only)
        if all(c.ok for c in checks) or time.monotonic() >= deadline:
            return checks
        time.sleep(0.5)


def format(checks: list[Check], fmt: str) -> str:
    if fmt == "json":
        # "skipped": true only on checks not run, so a passing or failing check keeps its shape
        return output.json_text([{k: v for k, v in asdict(c).items() if k != "skipped" or v} for c in checks])
    body = [[c.check, c.target, c.result, c.detail] for c in checks]
    passed = sum(c.ok for c in checks)
    skipped = sum(c.skipped for c in checks)
    summary = f"{passed} passed, {len(checks) - passed - skipped} failed" + (f", {skipped} not run" if skipped else "")
    return output.table(["CHECK", "TARGET", "RESULT", "DETAIL"], body) + f"\n\n{summary}"
