"""`labctl trace SRC DST --capture`: tcpdump on every interface the trace names while a ping goes
through, and under each hop the packet actually seen there (outer | inner headers, size)."""

from __future__ import annotations

import shlex
import time

from labctl.live.nodes import NodeShell
from labctl.observe import capture as cap
from labctl.plan.model import LabModel

# the echo request, in whichever wrapping it crosses an interface
FILTER = "icmp or udp port 4789 or ip proto 4"


def points(model: LabModel, result: dict) -> list[dict | None]:
    """Per hop, where to capture: {node, netns, iface, label}, or None (a hop with no interface of its own)."""
    nodes = {n.name: n for n in model.nodes}
    pods = {p.name: (n, p) for n in model.nodes for p in n.pods}
    tunnel = model.calico.tunnel_device
    out: list[dict | None] = []
    for h in result["hops"]:
        node, netns, iface = nodes.get(h["at"]), None, None
        kind = h["kind"]
        if kind == "pod" and h["at"] in pods:
            node, p = pods[h["at"]]
            netns, iface = p.netns, (h.get("get") or {}).get("dev", "eth0")
        elif kind == "deliver" and h["at"] in pods:
            node, p = pods[h["at"]]
            netns, iface = p.netns, "eth0"
        elif kind == "veth":
            iface = h.get("device")
        elif kind in ("route", "arrive"):
            iface = (h.get("get") or {}).get("dev")
        elif kind == "lan" and node:
            iface = node.interface
        elif kind == "decap":
            iface = tunnel
        if node is None or not iface or iface == "lo":
            out.append(None)
            continue
        label = f"{h['at']}:{iface}"
        out.append({"node": node, "netns": netns, "iface": iface, "label": label})
    return out


def _key(t: dict) -> tuple:
    return (t["node"].name, t["netns"], t["iface"])


def _ours(p: dict, dst: str) -> bool:
    inner = p["layers"][-1]
    return inner.get("dst") == dst and inner.get("proto") == "ICMP" and "echo request" in inner["text"]


def capture(lab, result: dict, settle: float = 0.5) -> dict:
    """Capture on each hop's interface around one ping from SRC; adds hop["seen"] (None: nothing)."""
    model = lab.model()
    where = points(model, result)
    targets = {_key(t): t for t in where if t}
    shells: dict[str, NodeShell] = {}
    caps: dict[tuple, cap.Capture] = {}
    seen: dict[tuple, dict] = {}
    s, d = result["src"], result["dst"]
    try:
        for k, t in targets.items():
            name = t["node"].name
            if name not in shells:
                shells[name] = NodeShell(lab.dir, t["node"])
            caps[k] = cap.Capture(shells[name], t, None, FILTER)
            caps[k].start()
        src_node = model.node(s["node"])
        shell = shells.get(src_node.name) or NodeShell(lab.dir, src_node)
        shells[src_node.name] = shell
        pod = next((p for p in src_node.pods if p.name == s["name"]), None)
        ns = f"ip netns exec {shlex.quote(pod.netns)} " if s["kind"] == "pod" and pod else ""
        shell.run(f"{ns}ping -c1 -W1 {shlex.quote(d['ip'])}", timeout=10)
        time.sleep(settle)
        for c in caps.values():
            c.stop()
        for k, c in caps.items():
            for p in c.packets(c.drain()):
                if k not in seen and _ours(p, d["ip"]):
                    seen[k] = p
    finally:
        for c in caps.values():
            c.close()
        for sh in shells.values():
            sh.close()
    for h, t in zip(result["hops"], where, strict=True):
        p = seen.get(_key(t)) if t else None
        h["capture"] = t["label"] if t else None
        h["seen"] = {"line": p["line"], "encap": p["encap"], "length": p["length"]} if p else None
    result["captured"] = True
    return result


def format(result: dict, text: str) -> str:
    """The trace's text with, under each hop, what tcpdump saw on that hop's interface."""
    lines = text.split("\n")
    out = lines[:1]
    for i, h in enumerate(result["hops"]):
        out.append(lines[1 + i])
        if h.get("capture"):
            seen = h["seen"]["line"] if h.get("seen") else "nothing seen"
            out.append(f"      seen on {h['capture']}: {seen}")
    return "\n".join(out + lines[1 + len(result["hops"]) :])
