"""`labctl graph`: the lab as Mermaid or Graphviz dot, from live node facts."""

from __future__ import annotations

from labctl.plan.model import LabModel


def shown(v) -> str:
    """A value read from a node: `?` if it could not be read (None), `-` if empty."""
    return "?" if v is None else (str(v) if v != "" else "-")


def edges(model: LabModel, rows: list[dict]):
    """(node, peer, state) once per BGP session, as the first of its two ends reports it."""
    by_addr = {p.protocol: p.name for n in model.nodes for p in n.peers}
    seen = set()
    for r in rows:
        for p in r["bgp"]["peers"]:
            peer = by_addr.get(p["name"])
            if peer is None:
                continue
            key = tuple(sorted((r["name"], peer)))
            if key in seen:
                continue
            seen.add(key)
            yield r["name"], peer, p["info"].split()[0] if p["info"] else p["state"]


def unreachable(rows: list[dict]) -> list[str]:
    return [r["name"] for r in rows if r.get("state") == "unreachable"]


def _label(r: dict) -> str:
    labels = "?" if r["labels"] is None else " ".join(f"{k}={v}" for k, v in r["labels"].items())
    head = f"{r['name']}\\n{shown(r['interface'])} {shown(r['physical_ip'])}"
    return head + f"\\n{shown(r['tunnel_device'])} {shown(r['tunnel_ip'])}" + (f"\\n{labels}" if labels else "")


def _lans(model: LabModel, rows: list[dict]) -> tuple[dict, dict]:
    """LAN id -> its label, and row -> the LANs it sits on: one per network with `networks:` (a router
    sits on several), else the one LAN."""
    nets = model.networks
    if not nets:
        return {"lan": f"LAN {model.network.lan}"}, {r["name"]: ["lan"] for r in rows}
    ids = {name: f"lan{i}" for i, name in enumerate(nets)}
    on = {n.name: [ids[n.network]] for n in model.nodes if n.network is not None}
    on |= {r.name: [ids[i.network] for i in r.interfaces] for r in model.routers or []}
    return {ids[k]: f"{k} {v.lan}" for k, v in nets.items()}, on


def render(model: LabModel, rows: list[dict], fmt: str) -> str:
    ids = {r["name"]: f"n{i}" for i, r in enumerate(rows)}
    lans, on = _lans(model, rows)
    if fmt == "dot":
        out = ["graph lab {", '  node [shape=box, fontname="monospace"];']
        out += [f'  {k} [shape=ellipse, label="{v}"];' for k, v in lans.items()]
        for r in rows:
            out.append(f'  {ids[r["name"]]} [label="{_label(r)}"];')
            out += [f"  {lan} -- {ids[r['name']]} [color=gray];" for lan in on.get(r["name"], [])]
        for a, b, state in edges(model, rows):
            color = "green" if state == "Established" else "red"
            out.append(f'  {ids[a]} -- {ids[b]} [label="BGP {state}", color={color}, style=dashed];')
        return "\n".join(out + ["}"])
    out = ["graph TD"] + [f'  {k}(("{v}"))' for k, v in lans.items()]
    for r in rows:
        out.append(f'  {ids[r["name"]]}["{_label(r).replace(chr(92) + "n", "<br/>")}"]')
        out += [f"  {lan} --- {ids[r['name']]}" for lan in on.get(r["name"], [])]
    for a, b, state in edges(model, rows):
        out.append(f'  {ids[a]} -. "BGP {state}" .- {ids[b]}')
    return "\n".join(out)
