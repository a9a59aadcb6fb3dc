"""`labctl view` and `labctl graph -f html`: the lab as data for the page that draws it.

Everything here is read with labctl's own read side (inspect's rows, bgp's node row, trace) and
shaped for the page (labctl/static/view.js): networks, nodes and routers, pods, and every BGP session
of the model with the state its ends report. The page is the same file live and exported: live it
polls the server (view_http.py), exported it carries one snapshot inline and needs no network."""

from __future__ import annotations

import json
import time
from pathlib import Path

from labctl.errors import LabctlError, UsageError
from labctl.live import iproute
from labctl.live import nodes as live
from labctl.observe import bgp, trace
from labctl.observe import inspect as ins
from labctl.plan.model import LabModel
from labctl.spec import calico

STATIC = Path(__file__).parent.parent / "static"
# the only files the server hands out, with their types: nothing is looked up by a client's path
ASSETS = {"view.js": "text/javascript", "view.css": "text/css", "cytoscape.min.js": "text/javascript"}
ESTABLISHED = "Established"


def networks(model: LabModel) -> tuple[list[dict], dict[str, list[str]]]:
    """The LANs ({id, name, lan, gateway}) and, per node or router, the ids of the LANs it sits on."""
    if not model.networks:
        nets = [{"id": "lan", "name": "LAN", "lan": model.network.lan, "gateway": model.network.gateway}]
        return nets, {n.name: ["lan"] for n in model.nodes}
    nets = [{"id": k, "name": k, "lan": v.lan, "gateway": v.gateway} for k, v in model.networks.items()]
    on = {n.name: [n.network] for n in model.nodes if n.network}
    on |= {r.name: [i.network for i in r.interfaces] for r in model.routers or []}
    return nets, on


def _kind(peer_type: str) -> str:
    # the model names both ends' view (rr / rr-client, tor / tor-client); the page draws the session
    return {"rr-client": "rr", "tor-client": "tor"}.get(peer_type, peer_type)


def sessions(model: LabModel, rows: list[dict]) -> list[dict]:
    """Every BGP session the model expects, once, with the state its ends report: Established only
    when no end that could be read says otherwise; `?` when neither end could tell."""
    reported = {(r["name"], p["name"]): p for r in rows for p in r["bgp"]["peers"]}
    read = {r["name"] for r in rows if r["bgp"]["established"] is not None}
    speakers = {s.name for s in model.speakers}
    out: dict[tuple, dict] = {}
    for sp in model.speakers:
        for p in sp.peers:
            if p.name not in speakers:
                continue
            a, b = sorted((sp.name, p.name))
            s = out.setdefault((a, b), {"id": f"{a}|{b}", "a": a, "b": b, "type": _kind(p.type), "ends": {}})
            if p.asn is not None:
                s["asn"] = p.asn
            if sp.name not in read:
                continue
            got = reported.get((sp.name, p.protocol))
            # a node whose BIRD is down lists no session at all: that end is down, not unknown
            s["ends"][sp.name] = (
                (got["info"] or got["state"]).split()[0] if got and (got["info"] or got["state"]) else "down"
            )
    for s in out.values():
        states = list(s["ends"].values())
        bad = [x for x in states if x != ESTABLISHED]
        s["state"] = bad[0] if bad else (ESTABLISHED if states else "?")
    return list(out.values())


def build(model: LabModel, rows: list[dict]) -> dict:
    """The page's data from inspect's rows (nodes, then lab routers)."""
    nets, on = networks(model)
    rr = {n.name for n in model.nodes if n.route_reflector}
    asn = {s.name: s.asn for s in model.speakers}
    nodes = []
    for r in rows:
        node = {k: r.get(k) for k in ins.COLUMNS if k != "bgp"}
        node |= {"bgp": {k: r["bgp"][k] for k in ("established", "expected")}, "error": r.get("error") or ""}
        node |= {"fault": r.get("fault") or "", "impair": r.get("impair") or ""}
        node |= {"networks": on.get(r["name"], []), "route_reflector": r["name"] in rr, "asn": asn.get(r["name"])}
        node["sessions"] = r["bgp"]["peers"]
        nodes.append(node)
    pods = [{"name": p.name, "ip": p.ip, "node": n.name, "veth": p.veth} for n in model.nodes for p in n.pods]
    c = model.calico
    lab = {"name": model.name, "provider": model.provider, "encapsulation": c.encapsulation}
    lab |= {"tunnel_device": c.tunnel_device, "bgp": c.bgp or ("reflectors" if c.route_reflectors else "mesh")}
    return {"lab": lab, "networks": nets, "nodes": nodes, "pods": pods, "sessions": sessions(model, rows)}


def snapshot(lab, shell=None) -> dict:
    """The live lab now: inspect's read of every node and router, shaped for the page; `shell(node)`:
    the connections to read over (shellpool.ShellPool.shell keeps them open between snapshots)."""
    start = time.monotonic()
    model = lab.model()
    data = build(model, ins.rows(lab, shell))
    return data | {"time": time.time(), "took": round(time.monotonic() - start, 3)}


def programmed_by(r: dict) -> str:
    """Who put a kernel route there, as far as the route itself tells."""
    proto = iproute.protocol(r)
    if proto == calico.BIRD:
        return "BIRD (own block)" if r.get("type") == "blackhole" else "BIRD (learned over BGP)"
    if proto == calico.FELIX:
        return "Felix (proto 80)"
    if proto == "kernel":
        return "kernel (directly connected)"
    if r.get("dev", "").startswith("cali"):
        return "Calico (the local pod's /32)"
    return f"static ({proto or 'boot'})"


def node_detail(lab, name: str) -> dict:
    """One node's (or router's) kernel routes with who programmed each, its BGP sessions and learned
    routes (bgp's row; its labels are the snapshot's). `name` must be a node or router of the model."""
    model = lab.model()
    node = next((s for s in model.speakers if s.name == name), None)
    if node is None:
        raise UsageError(f"no node {name!r} in lab {model.name}")
    [row] = bgp.sessions_and_routes(lab, name)
    out = {"name": name, "role": node.role, "bgp": row, "routes": []}
    try:
        with live.NodeShell(lab.dir, node) as s:
            rc, text, err = s.run("ip -j -4 route show")
    except LabctlError as e:
        return out | {"error": str(e)}
    routes = iproute.loads(text) if rc == 0 else []
    out["routes"] = [{"route": iproute.route_line(r), "by": programmed_by(r), "dev": r.get("dev", "")} for r in routes]
    return out | {"error": "" if rc == 0 else err.strip()}


def trace_path(lab, src: str, dst: str) -> dict:
    """`labctl trace` between two of the lab's pods or nodes, by name only (the page's choice)."""
    model = lab.model()
    names = {p.name for n in model.nodes for p in n.pods} | {n.name for n in model.nodes}
    for x in (src, dst):
        if x not in names:
            raise UsageError(f"{x!r} is not a pod or node of lab {model.name}")
    if src == dst:
        raise UsageError("pick two different endpoints")
    return trace.trace(lab, src, dst)


def _inline_json(data) -> str:
    # inside <script>: no `</script>` or `<!--` can come out of a value
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(data: dict | None = None) -> str:
    """The page: served (assets by URL, data polled) or, with `data`, one self-contained file."""
    html = (STATIC / "view.html").read_text()
    if data is None:
        head = '<link rel="stylesheet" href="static/view.css">'
        body = '<script src="static/cytoscape.min.js"></script><script src="static/view.js"></script>'
    else:
        head = f"<style>{(STATIC / 'view.css').read_text()}</style>"
        body = f'<script type="application/json" id="labctl-data">{_inline_json(data)}</script>'
        body += "".join(f"<script>{(STATIC / f).read_text()}</script>" for f in ("cytoscape.min.js", "view.js"))
    return html.replace("<!--labctl:head-->", head).replace("<!--labctl:body-->", body)
