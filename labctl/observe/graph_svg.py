"""`labctl graph --format svg`: the lab as one self-contained SVG image.

Plain string building, so it needs no Graphviz, fonts or network: a LAN bar on top, one box per
node (physical IP, tunnel device and IP, block, labels), and a curve under the boxes per BGP
session, green when Established and red otherwise."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from labctl.observe.graph import edges, shown
from labctl.plan.model import LabModel

BOX_W, BOX_H, GAP, MARGIN = 230, 112, 40, 20
LAN_Y, BOX_Y = 50, 110
GREEN, RED = "#2e7d32", "#c62828"


def _text(x: float, y: float, s: str, **attrs) -> str:
    extra = "".join(f" {k.replace('_', '-')}={quoteattr(str(v))}" for k, v in attrs.items())
    return f'<text x="{x:.0f}" y="{y:.0f}"{extra}>{escape(s)}</text>'


def svg(model: LabModel, rows: list[dict]) -> str:
    n = max(len(rows), 1)
    width = 2 * MARGIN + n * BOX_W + (n - 1) * GAP
    # session curves bend below the boxes, deeper for nodes further apart, so they never cross a box
    height = BOX_Y + BOX_H + 40 + 30 * n + 40
    centre = {r["name"]: MARGIN + i * (BOX_W + GAP) + BOX_W / 2 for i, r in enumerate(rows)}
    lan, gw, name = model.network.lan, model.network.gateway, model.name
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">',
        f"<title>{escape('lab ' + name)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        _text(MARGIN, 22, f"lab {name}: LAN {lan}, gateway {gw}", font_weight="bold"),
        f'<rect x="{MARGIN}" y="{LAN_Y - 6}" width="{width - 2 * MARGIN}" height="12" fill="#90a4ae" rx="3"/>',
        _text(width - MARGIN - 4, LAN_Y - 10, f"LAN {lan}", text_anchor="end", fill="#455a64"),
    ]
    out += _sessions(model, rows, centre)
    for i, r in enumerate(rows):
        out += _box(MARGIN + i * (BOX_W + GAP), centre[r["name"]], r)
    out += _legend(height - 14)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _sessions(model: LabModel, rows: list[dict], centre: dict[str, float]) -> list[str]:
    out = []
    bottom = BOX_Y + BOX_H
    for a, b, state in edges(model, rows):
        x1, x2 = sorted((centre[a], centre[b]))
        depth = 25 + 30 * round(abs(x2 - x1) / (BOX_W + GAP))
        color = GREEN if state == "Established" else RED
        out.append(
            f'<path d="M {x1:.0f} {bottom} Q {(x1 + x2) / 2:.0f} {bottom + 2 * depth} {x2:.0f} {bottom}" '
            f'fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="6 3">'
            f"<title>{escape(f'BGP {a} - {b}: {state}')}</title></path>"
        )
        out.append(_text((x1 + x2) / 2, bottom + depth + 4, f"BGP {state}", text_anchor="middle", fill=color))
    return out


def _box(x: float, cx: float, r: dict) -> list[str]:
    out = [f'<line x1="{cx:.0f}" y1="{LAN_Y + 6}" x2="{cx:.0f}" y2="{BOX_Y}" stroke="#90a4ae" stroke-width="2"/>']
    ok = r.get("state") == "running"
    out.append(
        f'<rect x="{x}" y="{BOX_Y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#f5f7fa" '
        f'stroke="{"#37474f" if ok else RED}" stroke-width="1.5">'
        f"<title>{escape(r['name'] + ' ' + str(r.get('labels') or {}))}</title></rect>"
    )
    labels = "?" if r.get("labels") is None else ", ".join(f"{k}={v}" for k, v in r["labels"].items())
    if len(labels) > 24:  # keep the box's width; the full set is in the box's tooltip
        labels = labels[:23] + "…"
    bgp = r.get("bgp") or {}
    est = shown(bgp.get("established"))
    lines = [
        (r["name"], {"font_weight": "bold", "font_size": "13"}),
        (f"{shown(r.get('interface'))} {shown(r.get('physical_ip'))}", {}),
        (f"{shown(r.get('tunnel_device'))} {shown(r.get('tunnel_ip'))}", {}),
        (f"block {shown(r.get('block'))}", {}),
        (f"labels {labels or '-'}", {}),
        (f"{r.get('role', '')} {r.get('state', '')} BGP {est}/{bgp.get('expected', 0)}", {}),
    ]
    for j, (s, attrs) in enumerate(lines):
        out.append(_text(x + 10, BOX_Y + 20 + j * 17, s, **attrs))
    return out


def _legend(ly: float) -> list[str]:
    return [
        _text(MARGIN, ly, "BGP session:", fill="#455a64"),
        _swatch(MARGIN + 100, ly - 4, GREEN),
        _text(MARGIN + 136, ly, "Established", fill=GREEN),
        _swatch(MARGIN + 230, ly - 4, RED),
        _text(MARGIN + 266, ly, "other state", fill=RED),
    ]


def _swatch(x: int, y: int, color: str) -> str:
    return f'<line x1="{x}" y1="{y}" x2="{x + 30}" y2="{y}" stroke="{color}" stroke-width="2"/>'
