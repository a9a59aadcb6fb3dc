"""`labctl graph`: the lab as Mermaid or Graphviz dot, from live node facts."""

from __future__ import annotations


def _edges(data: dict, rows: list[dict]):
    by_addr = {p["protocol"]: p["name"] for n in data["nodes"] for p in n["peers"]}
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


def _label(r: dict) -> str:
    labels = " ".join(f"{k}={v}" for k, v in r["labels"].items())
    return f"{r['name']}\\n{r['interface']} {r['physical_ip']}\\n{r['tunnel_device']} {r['tunnel_ip']}" + (
        f"\\n{labels}" if labels else ""
    )


def render(data: dict, rows: list[dict], fmt: str) -> str:
    ids = {r["name"]: f"n{i}" for i, r in enumerate(rows)}
    lan = data["network"]["lan"]
    if fmt == "dot":
        out = ["graph lab {", '  node [shape=box, fontname="monospace"];', f'  lan [shape=ellipse, label="LAN {lan}"];']
        for r in rows:
            out.append(f'  {ids[r["name"]]} [label="{_label(r)}"];')
            out.append(f"  lan -- {ids[r['name']]} [color=gray];")
        for a, b, state in _edges(data, rows):
            color = "green" if state == "Established" else "red"
            out.append(f'  {ids[a]} -- {ids[b]} [label="BGP {state}", color={color}, style=dashed];')
        return "\n".join(out + ["}"])
    out = ["graph TD", f'  lan(("LAN {lan}"))']
    for r in rows:
        out.append(f'  {ids[r["name"]]}["{_label(r).replace(chr(92) + "n", "<br/>")}"]')
        out.append(f"  lan --- {ids[r['name']]}")
    for a, b, state in _edges(data, rows):
        out.append(f'  {ids[a]} -. "BGP {state}" .- {ids[b]}')
    return "\n".join(out)
