"""`labctl trace SRC DST`: the path a packet takes through the lab, hop by hop, read live.

Every hop is a real lookup on the machine that makes the decision (`ip route get` in the pod, then
on each node), annotated with why that hop was chosen: Calico's 169.254.1.1 gateway and proxy ARP,
the BGP-learned route and the peer that announced it, the VXLAN/IPIP wrapping, the /32 to the pod.
A real `ping -c1 -W1` from the source closes the trace."""

from __future__ import annotations

import ipaddress
import json
import shlex

from labctl import output, providers
from labctl.errors import LabctlError, UsageError
from labctl.host import routers
from labctl.live import bird, iproute
from labctl.live import nodes as live
from labctl.observe import pods as podinfo
from labctl.observe.pods import LivePod
from labctl.plan.model import LabModel, Node, Router
from labctl.spec import calico


def resolve(model: LabModel, x: str, pods: list[LivePod] | None = None) -> dict:
    """A workload/node name or an IP -> what it is and which node holds it (None: outside the lab).
    `pods`: where the workloads really are (labctl.observe.pods.read); default: the plan (netns labs)."""
    pods = podinfo.planned(model) if pods is None else pods
    for p in pods:
        if x in (p.name, p.ip):
            return {"kind": "pod", "name": p.name, "ip": p.ip, "node": p.node, "pod": p}
    for n in model.nodes:
        if x in (n.name, n.address):
            return {"kind": "node", "name": n.name, "ip": n.address, "node": n.name}
        if x == n.tunnel_ip:
            return {"kind": "tunnel", "name": f"{n.name} tunnel", "ip": x, "node": n.name}
    if x in {w.name for w in model.workloads}:
        raise LabctlError(
            f"workload {x!r} has no running pod with an address in lab {model.name}",
            f"see `labctl exec {model.control_plane.name} -- kubectl --kubeconfig /etc/kubernetes/admin.conf "
            f"get pods -o wide -l {podinfo.WORKLOAD_LABEL}={x}`",
        )
    try:
        ip = ipaddress.ip_address(x)
    except ValueError:
        names = list(dict.fromkeys([p.name for p in pods] + [w.name for w in model.workloads]))
        names += [n.name for n in model.nodes]
        raise UsageError(
            f"{x!r} is not a workload, node or IP of this lab", f"try one of: {', '.join(names)}"
        ) from None
    for n in model.nodes:
        if n.block and ip in ipaddress.ip_network(n.block):
            return {"kind": "ip", "name": x, "ip": x, "node": n.name}
    if podinfo.in_cluster(model) and ip in ipaddress.ip_network(model.calico.pool):
        # a cluster's blocks are Calico IPAM's, not the plan's: the pool is the lab's, its node unknown here
        return {"kind": "ip", "name": x, "ip": x, "node": None}
    return {"kind": "external", "name": x, "ip": x, "node": None}


def _names_pod(model: LabModel, *xs: str) -> bool:
    try:
        return any(resolve(model, x, [])["kind"] not in ("node", "tunnel") for x in xs)
    except LabctlError:
        return True


class _Shells:
    """One SSH connection per node, opened when the trace first reaches it."""

    def __init__(self, lab_dir, model: LabModel):
        self.lab_dir, self.open = lab_dir, {}
        self.nodes: dict[str, Node | Router] = {n.name: n for n in model.speakers}

    def run(self, node: str, cmd: str) -> tuple[int, str, str]:
        if node not in self.open:
            self.open[node] = live.NodeShell(self.lab_dir, self.nodes[node])
        return self.open[node].run(cmd)

    def json(self, node: str, cmd: str) -> list:
        rc, out, err = self.run(node, cmd)
        if rc != 0:
            raise LabctlError(f"{node}: {cmd}: {(err or out).strip() or f'exit {rc}'}")
        return json.loads(out) if out.strip() else []

    def close(self) -> None:
        for s in self.open.values():
            s.close()


route_line = iproute.route_line  # kept here for callers that used it from trace


def _lookup(sh: _Shells, node: str, dst: str, src: str | None, iif: str | None, prefix: str = "") -> tuple:
    """The kernel's decision (`ip route get`, as a forwarded packet when iif is known) and the
    table entry it came from (longest prefix of `ip route show match`). Returns (get, route, note)."""
    note = ""
    get = None
    if iif and src:
        rc, out, err = sh.run(node, f"{prefix}ip -j route get {dst} from {src} iif {shlex.quote(iif)}")
        if rc == 0:
            get = json.loads(out)[0]
        else:
            note = f"forwarding lookup from {src} on {iif} failed ({err.strip()}); shown as sent by the node"
    if get is None:
        get = sh.json(node, f"{prefix}ip -j route get {dst}")[0]
    matches = sh.json(node, f"{prefix}ip -j route show match {dst}")
    route = max(matches, key=iproute.prefixlen) if matches else {}
    return get, route, note


def _link(sh: _Shells, node: str, dev: str) -> dict:
    links = sh.json(node, f"ip -d -j link show {shlex.quote(dev)}")
    return links[0] if links else {}


def _bgp_origin(sh: _Shells, node: Node | Router, birdc: str, dst: str) -> dict | None:
    """BIRD's best route for dst: which session taught it and the BGP next hop it carries."""
    rc, out, _ = sh.run(node.name, f"{birdc} show route for {dst} all")
    best = [r for r in bird.routes(out) if r["primary"] and r["source"] == "BGP"] if rc == 0 else []
    return best[0] if best else None


def trace(lab, src: str, dst: str) -> dict:
    model = lab.model()
    sh = _Shells(lab.dir, model)
    try:
        # netns labs: the plan, no I/O; clusters: the API server, the nodes' runtime and routes (not
        # asked when both ends are nodes: a node-to-node trace works with the API server down)
        pods = podinfo.read(model, sh.run) if _names_pod(model, src, dst) else []
        s, d = resolve(model, src, pods), resolve(model, dst, pods)
        if s["kind"] not in ("pod", "node"):
            raise UsageError(f"source {src!r} must be a workload or a node of lab {lab.name}")
        if d["kind"] == "external":  # a packet for it would leave the lab (the safety rule): refused, nothing sent
            raise UsageError(
                f"{dst!r} is not an address of lab {lab.name}", "trace only to its workloads, nodes and blocks"
            )
        t = _Trace(lab, model, s, d, sh, pods)
        cur, iif = s["node"], None
        if s["kind"] == "pod":
            iif = t.leave_pod()
            if iif is None:
                return t.result(True)
        return t.result(t.walk(cur, iif))
    finally:
        sh.close()


class _Trace:
    """One trace's state: the shells, the hops so far, and how to reach BIRD on each node."""

    def __init__(self, lab, model: LabModel, s: dict, d: dict, sh: _Shells, pods: list[LivePod]):
        self.model, self.s, self.d, self.pods = model, s, d, pods
        self.sh = sh  # nodes and lab routers (`networks:`): a packet may cross them
        self.nodes = {n.name: n for n in model.nodes}
        self.by_addr = {n.address: n.name for n in model.nodes}
        self.routers = {r.name: r for r in model.routers or []}
        self.router_addr = {i.address: r.name for r in self.routers.values() for i in r.interfaces}
        self.hops: list[dict] = []
        self.prov = providers.get(model.provider, lab)
        self.protocols = calico.lab_protocols(model)

    def add(self, at: str, kind: str, text: str, why: str, **raw) -> None:
        self.hops.append({"hop": len(self.hops) + 1, "at": at, "kind": kind, "text": text, "why": why, **raw})

    def result(self, reached: bool) -> dict:
        return _result(self.sh, self.model, self.s, self.d, self.hops, reached)

    def leave_pod(self) -> str | None:
        """The pod's own decision and the veth it enters the node on; None if it stays in the pod."""
        s, d, cur = self.s, self.d, self.s["node"]
        pod: LivePod = s["pod"]
        if not pod.netns:
            raise LabctlError(f"cannot enter {pod.name}'s network namespace: {pod.error}")
        get, route, _ = _lookup(self.sh, cur, d["ip"], None, None, prefix=pod.enter())
        gw = get.get("gateway", "")
        why = f"the pod's table: {route_line(route)}"
        if gw == "169.254.1.1":
            why += "; Calico gives every pod this fake link-local gateway, so all its traffic goes to the host"
        if get.get("type") == "local":  # the pod's own address never leaves the pod
            self.add(
                s["name"], "arrive", f"{d['ip']} delivered locally in {s['name']}", "an address of the pod", get=get
            )
            return None
        text = f"{s['ip']} -> {d['ip']} leaves {s['name']} on {get['dev']} via {gw or 'on-link'}"
        self.add(s["name"], "pod", text, why, route=route, get=get)
        veth = pod.veth
        rc, out, _ = self.sh.run(cur, f"cat /proc/sys/net/ipv4/conf/{shlex.quote(veth)}/proxy_arp")
        proxy = out.strip() == "1"
        why = f"{veth} is the host end of the pod's eth0 (veth pair)"
        why += "; proxy_arp=1 on it, so the node answers ARP for 169.254.1.1 itself" if proxy else ""
        self.add(cur, "veth", f"enters {cur} on {veth}", why, proxy_arp=proxy, device=veth)
        return veth

    def walk(self, cur: str, iif: str | None) -> bool:
        """Node by node until the packet arrives, is delivered to a pod, or leaves the lab."""
        for _ in range(len(self.nodes) + len(self.routers) + 1):  # each node or router at most once
            get, route, note = _lookup(self.sh, cur, self.d["ip"], self.s["ip"], iif)
            if get.get("type") == "local":
                self.arrive(cur, get)
                return True
            dev, gw = get.get("dev", ""), get.get("gateway", "")
            local_pod = next((p for p in self.pods if p.node == cur and p.veth == dev), None)
            self.route_hop(cur, get, route, note, local_pod)
            if local_pod:
                text = f"{dev} -> {local_pod.name} eth0 {local_pod.ip}"
                why = "the veth pair carries the packet into the pod's namespace"
                self.add(local_pod.name, "deliver", text, why, device=dev)
                return local_pod.ip == self.d["ip"]
            kind = (_link(self.sh, cur, dev).get("linkinfo") or {}).get("info_kind", "")
            nxt = self.tunnel(cur, kind, dev, gw) if kind in ("vxlan", "ipip") else self.lan(cur, dev, gw)
            if nxt is None:
                return False
            cur, iif = nxt
        return False

    def arrive(self, cur: str, get: dict) -> None:
        d = self.d
        why = f"{d['ip']} is an address of {cur} (local table)"
        if d["node"] == cur and d["kind"] in ("ip", "tunnel", "pod"):
            why += f"; {cur} owns block {self.nodes[cur].block}"
        self.add(cur, "arrive", f"{d['ip']} delivered locally on {cur} ({get.get('dev', '')})", why, get=get)

    def name_of(self, addr: str) -> str | None:
        return self.by_addr.get(addr) or self.router_addr.get(addr)

    def route_hop(self, cur: str, get: dict, route: dict, note: str, local_pod: LivePod | None) -> None:
        dev, gw = get.get("dev", ""), get.get("gateway", "")
        if iproute.protocol(route) == calico.FELIX and not local_pod:
            why = (
                "Felix programmed it (proto 80) from the block's affinity in Calico's datastore, not from BGP: "
                f"via {gw or '-'} on {dev}"
            )
        elif iproute.protocol(route) in self.protocols and not local_pod:
            node = self.nodes.get(cur) or self.routers[cur]
            origin = _bgp_origin(self.sh, node, routers.birdc(self.prov, node), self.d["ip"])
            why = "learned over BGP"
            if origin:
                name = self.name_of
                peer, who = name(origin["next_hop"]), name(origin["gateway"])
                # Calico names a session after its peer's address (Node_10_12_1_254)
                sess = name(origin["protocol"].partition("_")[2].replace("_", "."))
                why += f" from {sess or who or peer or origin['next_hop']} (session {origin['protocol']}, "
                why += f"BGP next hop {origin['next_hop']}"
                if sess and peer and sess != peer and sess in self.nodes:
                    why += f" = {peer}: {sess} reflected {peer}'s route and kept its next hop"
                why += ")"
            why += f"; BIRD programmed it into the kernel via {gw or '-'} on {dev}"
        elif local_pod:
            why = f"Calico's /32 for local pod {local_pod.name}, more specific than the node's block"
        elif route.get("dst") == "default":
            why = "no more specific route: the default route"
        else:
            why = "a directly connected network" if route.get("protocol") == "kernel" else "the matching route"
        if cur in self.routers:
            why += f"; router {cur} forwards between its networks (ip_forward=1 in its namespace only)"
        elif not local_pod:
            why += self.encap_reason(cur)
        if note:
            why += f" ({note})"
        via = f" via {gw}" if gw else ""
        self.add(cur, "route", f"{cur}: {route_line(route)} -> out {dev}{via}", why, route=route, get=get)

    def encap_reason(self, cur: str) -> str:
        """`networks:` labs: whether Calico's rule wraps this packet here, and why."""
        owner = self.nodes.get(self.d["node"] or "")
        if not self.routers or owner is None or owner.name == cur:
            return ""
        enc = self.model.calico.encapsulation
        mode = calico.mode(enc, self.model.calico.tunnel_device)
        here = self.nodes[cur].network
        same = owner.network == here
        if calico.encapsulates(enc, same):
            where = f"same subnet ({here}), still" if same else f"other subnet ({owner.network}, behind a router):"
            return f"; {where} encapsulated under {mode}"
        if enc == "None":
            return f"; {mode}: never encapsulated, so routers between the networks must know the pod blocks"
        return f"; same subnet ({here}): native under {mode}"

    def cross_routers(self, cur: str, outer: str) -> None:
        """The outer packet of a tunnel on its way through the lab routers to the peer's network."""
        under = self.sh.json(cur, f"ip -j route get {outer}")[0]
        seen = set()
        while under.get("gateway") in self.router_addr:
            r = self.router_addr[under["gateway"]]
            if r in seen:
                return
            seen.add(r)
            under = self.sh.json(r, f"ip -j route get {outer}")[0]
            text = f"{r}: outer {outer} out {under.get('dev', '')}" + (
                f" via {under['gateway']}" if under.get("gateway") else ""
            )
            why = (
                f"router {r} forwards the outer packet between its networks; its header carries node addresses, "
                "so the router needs no pod routes"
            )
            self.add(r, "router", text, why)

    def tunnel(self, cur: str, kind: str, dev: str, gw: str) -> tuple[str, str] | None:
        """Wrap, cross the LAN, unwrap: the next node and the device the packet enters it on."""
        node, s, d = self.nodes[cur], self.s, self.d
        outer = _encap(self.sh, cur, node, kind, dev, gw, s["ip"], d["ip"], self.add)
        nxt = self.by_addr.get(outer)
        if nxt is None:
            return None
        under = self.sh.json(cur, f"ip -j route get {outer}")[0]
        lan = self.model.network.lan
        if node.network and self.model.networks:  # `networks:`: the node's own network
            lan = self.model.networks[node.network].lan
        text = f"outer packet {node.address} -> {outer} out {under.get('dev', '')}"
        if under.get("gateway") in self.router_addr:
            r = self.router_addr[under["gateway"]]
            self.add(cur, "lan", text + f" via {under['gateway']}", f"{outer} is in another network: via router {r}")
            self.cross_routers(cur, outer)
        else:
            self.add(cur, "lan", text, f"{outer} is {nxt}'s address on the directly connected LAN {lan}")
        how = "VXLAN VNI/port match its vxlan device" if kind == "vxlan" else "IPIP packet goes to its tunl0"
        why = f"the outer destination {outer} is {nxt}'s own address and the {how}"
        self.add(nxt, "decap", f"{nxt} unwraps it on its {dev}: inner {s['ip']} -> {d['ip']}", why)
        return nxt, dev

    def lan(self, cur: str, dev: str, gw: str) -> tuple[str, str] | None:
        """No tunnel: the packet goes on the LAN to the gateway (or the destination itself)."""
        hop_ip = gw or self.d["ip"]
        nxt = self.by_addr.get(hop_ip)
        if hop_ip in self.router_addr:
            r = self.router_addr[hop_ip]
            iface = next(i.ifname for i in self.routers[r].interfaces if i.address == hop_ip)
            why = f"{hop_ip} is router {r}'s address in this network: the node's route sends it there unwrapped"
            self.add(r, "router", f"{r} receives it on {iface}", why)
            return r, iface
        if nxt is None:
            self.add(cur, "exit", f"leaves the lab towards {hop_ip} on {dev}", f"{hop_ip} is not a node of this lab")
            return None
        iface = self.nodes[nxt].interface
        self.add(nxt, "lan", f"{nxt} receives it on {iface}", f"{hop_ip} is {nxt}'s LAN address")
        return nxt, iface


def _result(sh: _Shells, model: LabModel, s: dict, d: dict, hops: list[dict], reached: bool) -> dict:
    if d["node"] and reached and hops[-1]["at"] not in (d["node"], d["name"]):
        reached = False  # delivered, but not where the topology says the destination lives
    ping = _ping(sh, model, s, d["ip"])
    return {"src": _public(s), "dst": _public(d), "hops": hops, "reached": reached, "ping": ping}


def _encap(sh: _Shells, cur: str, node: Node, kind: str, dev: str, gw: str, src: str, dst: str, add) -> str:
    """Describe the tunnel header and return the outer destination (the next node's LAN IP)."""
    if kind == "ipip":
        # IPIP: the BGP/Calico route's gateway already is the peer's node IP, reached on-link over tunl0
        add(
            cur,
            "encap",
            f"IPIP: inner {src} -> {dst} wrapped in IP proto 4, outer {node.address} -> {gw}",
            f"the route sends it onlink via {gw} on {dev}, an ipip device: the gateway becomes the outer destination",
            encapsulation="IPIP",
            outer_src=node.address,
            outer_dst=gw,
        )
        return gw
    info = (_link(sh, cur, dev).get("linkinfo") or {}).get("info_data", {})
    neigh = next((n for n in sh.json(cur, f"ip -j neigh show dev {shlex.quote(dev)}") if n.get("dst") == gw), {})
    mac = neigh.get("lladdr", "")
    fdb = next((f for f in sh.json(cur, f"bridge -j fdb show dev {shlex.quote(dev)}") if f.get("mac") == mac), {})
    outer_src, outer_dst = info.get("local") or node.address, fdb.get("dst", "")
    vni, port = info.get("id"), info.get("port")
    if not mac or not outer_dst:
        # name the missing piece: without it the kernel cannot build the outer header
        missing = (
            f"{cur}: no neighbour entry for {gw} on {dev} (the peer's VTEP MAC is unknown)"
            if not mac
            else f"{cur}: no fdb entry for {mac} on {dev} (the node behind the peer's VTEP is unknown)"
        )
        add(cur, "encap", f"VXLAN: cannot wrap {src} -> {dst}: {missing}", missing, encapsulation="VXLAN", vtep_mac=mac)
        return ""
    add(
        cur,
        "encap",
        f"VXLAN: inner {src} -> {dst} wrapped in UDP {outer_src} -> {outer_dst}:{port}, VNI {vni}",
        f"next hop {gw} is the peer's VTEP: neigh {gw} lladdr {mac}, and fdb says {mac} lives at "
        f"{outer_dst}; {dev} is 'vxlan id {vni} local {outer_src} dstport {port}'",
        encapsulation="VXLAN",
        vni=vni,
        port=port,
        outer_src=outer_src,
        outer_dst=outer_dst,
        vtep_mac=mac,
    )
    return outer_dst


def _ping(sh: _Shells, model: LabModel, s: dict, dst: str) -> dict:
    node, cmd = podinfo.ping_command(model, s["pod"], dst) if s["kind"] == "pod" else (s["node"], "")
    cmd = cmd or f"ping -c1 -W1 {shlex.quote(dst)}"
    rc, out, err = sh.run(node, cmd)
    summary = [ln.strip() for ln in out.splitlines() if "transmitted" in ln or ln.startswith("rtt")]
    return {"command": cmd, "from": s["name"], "ok": rc == 0, "rc": rc, "summary": "; ".join(summary) or err.strip()}


def _public(x: dict) -> dict:
    return {k: v for k, v in x.items() if k != "pod"}


def format(result: dict, fmt: str) -> str:
    if fmt == "json":
        return output.json_text(result)
    s, d = result["src"], result["dst"]
    where = f"on {d['node']}" if d["node"] else "outside the lab"
    head = f"trace {s['name']} ({s['ip']}, on {s['node']}) -> {d['name']} ({d['ip']}, {where})"
    width = max([len(h["at"]) for h in result["hops"]] + [4])
    lines = [head]
    for h in result["hops"]:
        lines.append(f"{h['hop']:>2}  {h['at']:<{width}}  {h['text']}  [why: {h['why']}]")
    p = result["ping"]
    lines.append(f"ping from {p['from']}: {'ok' if p['ok'] else 'FAILED'} ({p['summary']})")
    if not result["reached"]:
        lines.append("the trace did not reach the destination's node")
    return "\n".join(lines)
