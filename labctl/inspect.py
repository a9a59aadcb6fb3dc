"""`labctl inspect`: the seed's table (physical IP, tunnel IP) and more, read from live nodes."""

from __future__ import annotations

import csv
import io
import json

from labctl import nodes as live

COLUMNS = ["name", "role", "state", "interface", "physical_ip", "tunnel_device", "tunnel_ip", "block", "labels", "bgp"]


def rows(lab) -> list[dict]:
    data = lab.data()
    facts = live.gather(lab.dir, data["nodes"], provider=data["provider"])
    # vm labs: labels come from the API, which the control plane's probe read
    api = next((f.k8s for f in facts if f.k8s), {})
    api_labels = {
        i["metadata"]["name"]: i["metadata"].get("labels") or {}
        for i in api.get("items", [])
        if i.get("kind") == "Node"
    }
    out = []
    for node, f in zip(data["nodes"], facts, strict=True):
        expected = len(node["peers"])
        est = sum(1 for s in f.sessions if s.established)
        state = "running" if f.reachable and f.bird_running else ("degraded" if f.reachable else "unreachable")
        out.append(
            {
                "name": node["name"],
                "role": node["role"],
                "state": state,
                "hostname": f.hostname,
                "interface": f.interface,
                "physical_ip": f.physical_ip,
                "tunnel_device": f.tunnel_device,
                "tunnel_ip": f.tunnel_ip,
                "block": f.block,
                "labels": api_labels.get(node["name"], {}) if data["provider"] in ("vm", "qemu") else f.labels,
                "bgp": {
                    "established": est,
                    "expected": expected,
                    "peers": [{"name": s.name, "state": s.state, "info": s.info, "since": s.since} for s in f.sessions],
                },
                "error": f.error,
            }
        )
    return out


def _cell(row: dict, col: str) -> str:
    v = row[col]
    if col == "labels":
        return ",".join(f"{k}={val}" for k, val in v.items())
    if col == "bgp":
        return f"{v['established']}/{v['expected']}"
    return str(v or "-") if col != "labels" else v


def format(rows_: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows_, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows_:
            w.writerow([_cell(r, c) if c in ("labels", "bgp") else (r[c] or "") for c in COLUMNS])
        return buf.getvalue().rstrip("\n")
    return table([c.upper().replace("_", "-") for c in COLUMNS], [[_cell(r, c) for c in COLUMNS] for r in rows_])


def table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header)] + [fmt.format(*map(str, r)) for r in body]
    return "\n".join(line.rstrip() for line in lines)
