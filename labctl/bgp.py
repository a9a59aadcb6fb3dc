"""`labctl bgp`: each node's BGP sessions and the routes it learned over them, read live from BIRD.

This is the seed's question answered from the source: node A knows the next hop for a workload on
node B because B's BIRD announced "this block lives here, the next hop is me" over a BGP session."""

from __future__ import annotations

import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor

from labctl.errors import LabctlError
from labctl.nodes import PROTO_ROW, NodeShell

# A route's first line in `show route all`: optional prefix, then type [proto since] primary (pref)
_ROUTE_ROW = re.compile(r"^(\S+)?\s+(\w+)\s+\[(\S+)\s+[^\]]*\]\s*(\*)?\s*\((\d+)\)")


def session_type(name: str, description: str = "") -> str:
    """Calico names its BIRD protocols: Mesh_<ip> for the node-to-node mesh, Node_/Global_<ip> for
    BGPPeer resources; a route reflector is only recognisable by name or description."""
    if name.startswith("Mesh_"):
        return "mesh"
    if "rr" in name.lower().split("_") or "reflector" in description.lower():
        return "rr"
    return "peer"


def parse_protocols_all(text: str) -> list[dict]:
    """BGP sessions from `birdc show protocols all` (or plain `show protocols`, then without
    peer address): the row gives state/since/info, the indented block the neighbor and BGP state."""
    out: list[dict] = []
    cur: dict | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("BIRD ", "Name ")):
            continue
        if not line[0].isspace():
            m = PROTO_ROW.match(line)
            cur = None
            if m and m.group(2) == "BGP":
                cur = {
                    "name": m.group(1),
                    "type": "",
                    "peer_address": "",
                    "description": "",
                    "state": m.group(4),
                    "since": m.group(5),
                    "info": m.group(6),
                    "bgp_state": m.group(6).split()[0] if m.group(6) else "",
                    "last_error": "",
                }
                out.append(cur)
            continue
        if cur is None or ":" not in line:
            continue
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "Neighbor address":
            cur["peer_address"] = value
        elif key == "Description":
            cur["description"] = value
        elif key == "BGP state":
            cur["bgp_state"] = value
        elif key == "Last error":
            cur["last_error"] = value
    for s in out:
        s["type"] = session_type(s["name"], s["description"])
        if not s["peer_address"]:
            # plain `show protocols` has no neighbor; Calico encodes it in the name (Mesh_10_12_22_2)
            m = re.search(r"_(\d+)_(\d+)_(\d+)_(\d+)$", s["name"])
            s["peer_address"] = ".".join(m.groups()) if m else ""
    return out


def parse_routes(text: str) -> list[dict]:
    """Routes from `birdc show route all` (BIRD 2.0.x). A prefix line is followed by tab-indented
    next hops ("via IP on DEV" or "dev DEV") and attributes ("Type: BGP univ", "BGP.next_hop: IP");
    further routes for the same prefix start with whitespace instead of the prefix."""
    out: list[dict] = []
    cur: dict | None = None
    prefix = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith(("BIRD ", "Table ")):
            continue
        m = _ROUTE_ROW.match(line)
        if m and (m.group(1) or not line.startswith("\t")):
            prefix = m.group(1) or prefix
            cur = {
                "prefix": prefix,
                "kind": m.group(2),  # unicast, blackhole, unreachable, ...
                "protocol": m.group(3),
                "primary": bool(m.group(4)),
                "preference": int(m.group(5)),
                "source": "",  # BGP, static, device, ... from the Type: line
                "next_hop": "",
                "gateway": "",
                "device": "",
                "as_path": "",
            }
            out.append(cur)
            continue
        if cur is None:
            continue
        s = line.strip()
        if s.startswith("via "):
            parts = s.split()
            cur["gateway"] = parts[1]
            if "on" in parts:
                cur["device"] = parts[parts.index("on") + 1]
        elif s.startswith("dev "):
            cur["device"] = s.split()[1]
        elif s.startswith("Type:"):
            cur["source"] = s.split()[1]
        elif s.startswith("BGP.next_hop:"):
            cur["next_hop"] = s.split(":", 1)[1].split()[0] if s.split(":", 1)[1].strip() else ""
        elif s.startswith("BGP.as_path:"):
            cur["as_path"] = s.split(":", 1)[1].strip()
    for r in out:
        r["next_hop"] = r["next_hop"] or r["gateway"]
    return out


def _birdc(shell: NodeShell, sock: str, command: str) -> str:
    rc, out, err = shell.run(f"birdc -s {shlex.quote(sock)} {command}")
    if rc != 0 or "Unable to connect" in out + err:
        raise LabctlError(f"{shell.node['name']}: birdc {command}: {(out + err).strip() or f'exit {rc}'}")
    return out


def _kernel_routes(shell: NodeShell) -> dict[str, str]:
    """The kernel's `proto bird` routes by prefix: what BIRD's export filter actually programmed
    (for VXLAN: via the peer's tunnel IP on vxlan.calico, not the BGP next hop on the LAN)."""
    rc, out, _ = shell.run("ip -j -4 route show proto bird")
    try:
        routes = json.loads(out) if rc == 0 and out.strip() else []
    except ValueError:
        return {}
    lines = {}
    for r in routes:
        words = [r.get("type", "")] if r.get("type") not in (None, "unicast") else []
        words += [r["dst"]]
        if r.get("gateway"):
            words += ["via", r["gateway"]]
        if r.get("dev"):
            words += ["dev", r["dev"]]
        words += r.get("flags", [])
        lines[r["dst"]] = " ".join(w for w in words if w)
    return lines


def node_row(lab_dir, node: dict) -> dict:
    """One node's sessions and routes; an unreachable node or dead BIRD gives a row with `error`."""
    row = {"node": node["name"], "address": node["address"], "block": node.get("block", ""), "error": ""}
    row |= {"own_block": None, "sessions": [], "routes": []}
    sock = node.get("bird_socket", "/var/run/calico/bird.ctl")
    try:
        with NodeShell(lab_dir, node) as s:
            row["sessions"] = parse_protocols_all(_birdc(s, sock, "show protocols all"))
            routes = parse_routes(_birdc(s, sock, "show route all"))
            kernel = _kernel_routes(s)
    except LabctlError as e:
        row["error"] = str(e)
        return row
    peers = {x["name"]: x for x in row["sessions"]}
    for r in routes:
        if r["source"] == "BGP":
            r["peer_address"] = peers.get(r["protocol"], {}).get("peer_address", "")
            r["kernel"] = kernel.get(r["prefix"], "")
            row["routes"].append(r)
        elif r["prefix"] == node.get("block") and r["primary"]:
            # the node's own block: announced to the peers, blackholed here (pods have /32s)
            row["own_block"] = {"prefix": r["prefix"], "kind": r["kind"], "protocol": r["protocol"]}
    return row


def sessions_and_routes(lab, node_name: str | None = None) -> list[dict]:
    data = lab.data()
    nodes = data["nodes"]
    if node_name is not None:
        nodes = [n for n in nodes if n["name"] == node_name]
        if not nodes:
            from labctl.errors import UsageError

            raise UsageError(
                f"no node {node_name!r} in lab {lab.name}", f"nodes: {', '.join(n['name'] for n in data['nodes'])}"
            )
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as ex:
        rows = list(ex.map(lambda n: node_row(lab.dir, n), nodes))
    # name the peer's lab node too, so a reader need not map addresses to nodes by hand
    by_addr = {n["address"]: n["name"] for n in data["nodes"]}
    for r in rows:
        for s in r["sessions"]:
            s["peer_node"] = by_addr.get(s["peer_address"], "")
        for x in r["routes"]:
            x["peer_node"] = by_addr.get(x["peer_address"], "")
    return rows


def format(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    from labctl.inspect import table

    parts = []
    for r in rows:
        own = r["own_block"]
        head = f"{r['node']} ({r['address']}), own block {r['block'] or '-'}"
        if own:
            head += f": {own['kind']} from {own['protocol']}, announced to peers"
        parts.append(head)
        if r["error"]:
            parts.append(f"  error: {r['error']}")
            continue
        sess = [
            [s["name"], s["peer_address"], s["type"], s["state"], s["since"], s["info"] or "-"] for s in r["sessions"]
        ]
        parts.append(_indent(table(["SESSION", "PEER", "TYPE", "STATE", "SINCE", "INFO"], sess)))
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
        parts.append(_indent(table(["LEARNED-ROUTE", "BGP-NEXT-HOP", "DEVICE", "FROM", "BEST", "KERNEL-ROUTE"], rts)))
        parts.append("")
    return "\n".join(parts).rstrip("\n")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
