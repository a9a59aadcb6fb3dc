"""`labctl bgp`: each node's BGP sessions and the routes it learned over them, read live from BIRD.

This is the seed's question answered from the source: node A knows the next hop for a workload on
node B because B's BIRD announced "this block lives here, the next hop is me" over a BGP session.
BIRD is reached the provider's way (birdc on a netns node, birdcl inside calico-node on a VM)."""

from __future__ import annotations

from labctl import fanout, output, providers
from labctl.errors import LabctlError, UsageError
from labctl.host import routers
from labctl.live import bird, iproute
from labctl.live import nodes as live
from labctl.plan.model import Node, Router
from labctl.spec import calico

# the parsers' old names, for callers that used them from here
session_type = bird.session_type
parse_protocols_all = bird.protocols_all
parse_routes = bird.routes


def run_birdc(shell, birdc: str, command: str) -> str:
    """Output of one BIRD CLI command; a dead BIRD or a failing command raises LabctlError."""
    rc, out, err = shell.run(f"{birdc} {command}")
    if rc != 0 or "Unable to connect" in out + err:
        raise LabctlError(f"{shell.node.name}: {command}: {(out + err).strip() or f'exit {rc}'}")
    return out


def kernel_routes(shell, protocols: set[str]) -> dict[str, str]:
    """The kernel's pod-network routes by prefix, as programmed (BIRD's export filter, or Felix on
    VXLAN): for VXLAN via the peer's tunnel IP on vxlan.calico, not the BGP next hop on the LAN."""
    rc, out, _ = shell.run("ip -j -4 route show")
    routes = iproute.loads(out) if rc == 0 else []
    return {r["dst"]: iproute.short_route(r) for r in routes if iproute.protocol(r) in protocols and "dst" in r}


def node_row(lab_dir, node: Node | Router, birdc: str = "", protocols: set[str] | None = None) -> dict:
    """One node's sessions and routes; an unreachable node or dead BIRD gives a row with `error`."""
    birdc = birdc or f"birdc -s {node.bird_socket or '/var/run/calico/bird.ctl'}"
    block = getattr(node, "block", "")  # a router has none
    row = {"node": node.name, "address": node.address, "block": block, "error": ""}
    row |= {"own_block": None, "sessions": [], "routes": []}
    try:
        with live.NodeShell(lab_dir, node) as s:
            row["sessions"] = bird.protocols_all(run_birdc(s, birdc, "show protocols all"))
            routes = bird.routes(run_birdc(s, birdc, "show route all"))
            kernel = kernel_routes(s, protocols or {calico.BIRD})
    except LabctlError as e:
        row["error"] = str(e)
        return row
    peers = {x["name"]: x for x in row["sessions"]}
    for r in routes:
        if r["source"] == "BGP":
            r["peer_address"] = peers.get(r["protocol"], {}).get("peer_address", "")
            r["kernel"] = kernel.get(r["prefix"], "")
            row["routes"].append(r)
        elif block and r["prefix"] == block and r["primary"]:
            # the node's own block: announced to the peers, blackholed here (pods have /32s)
            row["own_block"] = {"prefix": r["prefix"], "kind": r["kind"], "protocol": r["protocol"]}
    return row


def sessions_and_routes(lab, node_name: str | None = None) -> list[dict]:
    model = lab.model()
    if model.calico.bgp == "none" and not any(r.asn for r in model.routers or []):
        raise UsageError(
            f"lab {lab.name} runs no BGP (calico.bgp: none): Felix programs every route",
            "see the routes with `labctl exec NODE -- ip route` or `labctl trace`",
        )
    nodes: list[Node | Router] = list(model.nodes)
    if node_name is not None:
        # a lab router (`networks:`) answers too: `labctl bgp core`
        nodes = [n for n in model.speakers if n.name == node_name]
        if not nodes:
            raise UsageError(
                f"no node {node_name!r} in lab {lab.name}", f"nodes: {', '.join(n.name for n in model.nodes)}"
            )
    prov = providers.get(model.provider, lab)
    protocols = calico.lab_protocols(model)
    rows = fanout.each(lambda n: node_row(lab.dir, n, routers.birdc(prov, n), protocols), nodes)
    # name the peer's lab node too, so a reader need not map addresses to nodes by hand
    by_addr = {n.address: n.name for n in model.nodes}
    by_addr |= {i.address: r.name for r in model.routers or [] for i in r.interfaces}
    for r in rows:
        for s in r["sessions"]:
            s["peer_node"] = by_addr.get(s["peer_address"], "")
        for x in r["routes"]:
            x["peer_node"] = by_addr.get(x["peer_address"], "")
    return rows


def _type(s: dict) -> str:
    # ToR sessions are eBGP: the peer's AS is the lesson (AS per rack)
    return f"{s['type']} (eBGP, AS {s['peer_as']})" if s["type"] == "tor" and s.get("peer_as") else s["type"]


def format(rows: list[dict], fmt: str) -> str:
    """The data rows; a node that could not be read is marked here, its error goes to stderr."""
    if fmt == "json":
        return output.json_text(rows)
    parts = []
    for r in rows:
        own = r["own_block"]
        head = f"{r['node']} ({r['address']}), own block {r['block'] or '-'}"
        if own:
            head += f": {own['kind']} from {own['protocol']}, announced to peers"
        parts.append(head)
        if r["error"]:
            parts.append("  not read (the error is on stderr)")
            parts.append("")
            continue
        sess = [
            [s["name"], s["peer_address"], _type(s), s["state"], s["since"], s["info"] or "-"] for s in r["sessions"]
        ]
        parts.append(output.indent(output.table(["SESSION", "PEER", "TYPE", "STATE", "SINCE", "INFO"], sess)))
        rts = [
            [
                x["prefix"],
                x["next_hop"],
                x["device"] or "-",
                x["protocol"],
                "*" if x["primary"] else "",
                x["kernel"] or "-",
            ]
            for x in r["routes"]
        ]
        header = ["LEARNED-ROUTE", "BGP-NEXT-HOP", "DEVICE", "FROM", "BEST", "KERNEL-ROUTE"]
        parts.append(output.indent(output.table(header, rts)))
        parts.append("")
    return "\n".join(parts).rstrip("\n")
