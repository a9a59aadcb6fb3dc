"""`labctl inspect`: the seed's table (physical IP, tunnel IP) and more, read from live nodes.

What could not be read (a node whose SSH is down) is None in the rows and `?` in the table, never
a plausible-looking value such as BGP 0/2."""

from __future__ import annotations

from labctl import output
from labctl.host import routers
from labctl.live import nodes as live
from labctl.observe import nodefacts
from labctl.plan import faults
from labctl.plan.model import LabModel, Node
from labctl.spec import netem
from labctl.spec.providers import traits

COLUMNS = ["name", "role", "state", "interface", "physical_ip", "tunnel_device", "tunnel_ip", "block", "labels", "bgp"]
READ_OVER_SSH = ("hostname", "interface", "physical_ip", "tunnel_device", "tunnel_ip", "block")


def rows(lab, shell=None) -> list[dict]:
    """`shell(node)`: the SSH connection to read a node over (nodes.gather's; default a new one)."""
    model = lab.model()
    # every interface's qdisc (the LAN NIC's, the tunnel's, lo's...): an impairment shows as an IMPAIR column
    tc = {n.name: {"tc": live.sudo(n) + netem.SHOW_ALL} for n in model.nodes}
    facts = nodefacts.gather_lab(lab, model, extra=tc, shell=shell)
    # vm labs: labels come from the API, which the control plane's probe read
    api = next((f.k8s for f in facts if f.k8s), None)
    api_labels = {
        i["metadata"]["name"]: i["metadata"].get("labels") or {}
        for i in (api or {}).get("items", [])
        if i.get("kind") == "Node"
    }
    out = [
        _row(model, node, f, api_labels if api is not None else None)
        for node, f in zip(model.nodes, facts, strict=True)
    ]
    broken = faults.shown(lab.state())  # `labctl fail` on purpose, until `repair` or `up`
    for r in out:
        r["fault"] = broken.get(r["name"], "")
    got = routers.read_all(lab, model)  # lab routers (`networks:`) are listed after the nodes
    return out + [routers.inspect_row(r, got[r.name]) for r in model.routers or []]


def _row(model: LabModel, node: Node, f: live.NodeFacts, api_labels: dict | None) -> dict:
    # calico.bgp: none runs no BIRD at all: a reachable node is then running, not degraded
    no_bgp = model.calico.bgp == "none"
    state = "running" if f.reachable and (f.bird_running or no_bgp) else ("degraded" if f.reachable else "unreachable")
    row = {"name": node.name, "role": node.role, "state": state}
    row |= {k: getattr(f, k) if f.reachable else None for k in READ_OVER_SSH}
    if traits(model.provider).labels_in_kubernetes:
        row["labels"] = api_labels.get(node.name, {}) if api_labels is not None else None
    else:
        row["labels"] = f.labels if f.reachable else None
    row["bgp"] = {
        "established": sum(1 for s in f.sessions if s.established) if f.reachable else None,
        "expected": len(node.peers),
        "peers": [{"name": s.name, "state": s.state, "info": s.info, "since": s.since} for s in f.sessions],
    }
    row["error"] = f.error
    tc = f.extra.get("tc", "").rsplit("rc=", 1)[0]
    row["impair"] = netem.describe_all(tc, node.interface) if f.reachable else None
    return row


def cell(row: dict, col: str) -> str:
    """A row's value as table/CSV text: `?` for what could not be read, `-` for what is empty."""
    v = row[col]
    if col == "labels":
        return "?" if v is None else ",".join(f"{k}={val}" for k, val in v.items())
    if col == "bgp":
        return f"{'?' if v['established'] is None else v['established']}/{v['expected']}"
    return "?" if v is None else str(v or "-")


def format(rows_: list[dict], fmt: str) -> str:
    if fmt == "json":
        return output.json_text(rows_)
    # shown only while some node is impaired, so the usual table keeps the seed's columns
    cols = COLUMNS + ["impair"] if any(r.get("impair") for r in rows_) else COLUMNS
    cols = cols + ["fault"] if any(r.get("fault") for r in rows_) else cols
    if fmt == "csv":
        body = [[cell(r, c) if c in ("labels", "bgp") or r[c] is None else (r[c] or "") for c in cols] for r in rows_]
        return output.csv_text(cols, body)
    return output.table([c.upper().replace("_", "-") for c in cols], [[cell(r, c) for c in cols] for r in rows_])
