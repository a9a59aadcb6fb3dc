"""`labctl fail` / `labctl repair`: break a node on purpose (its BIRD, its LAN link, the whole node)
and undo it. The provider does the breaking (providers/base.py: fail/repair); this module keeps
the record in the lab state, which `inspect` shows and `up` repairs from."""

from __future__ import annotations

from labctl import providers
from labctl.app.clock import now
from labctl.errors import UsageError
from labctl.plan.faults import KINDS, ORDER
from labctl.plan.model import LabModel, Node


def _node(model: LabModel, name: str) -> Node:
    n = model.node(name)
    if n is None:
        raise UsageError(f"no node {name!r} in lab {model.name}", f"nodes: {', '.join(x.name for x in model.nodes)}")
    return n


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(f"unknown fault {kind!r}", f"one of: {', '.join(KINDS)}")
    return kind


def fail(lab, node: str, kind: str) -> str:
    model = lab.model()
    n, kind = _node(model, node), _kind(kind)
    prov = providers.get(model.provider, lab)
    with lab.lock():
        faults = lab.state().get("faults") or {}
        if kind in faults.get(node, {}):
            return f"{node}: {kind} already failed (since {faults[node][kind].get('since', '?')})"
        record = prov.fail(model, n, kind)
        faults.setdefault(node, {})[kind] = record | {"since": now()}
        lab.save_state(faults=faults)
    return f"{node}: {kind} failed; `labctl repair {node}` (or `labctl up`) undoes it"


def repair(lab, node: str, kind: str | None = None) -> str:
    model = lab.model()
    n = _node(model, node)
    prov = providers.get(model.provider, lab)
    with lab.lock():
        faults = lab.state().get("faults") or {}
        have = faults.get(node, {})
        # a named kind is repaired even if labctl did not break it (a BIRD killed by hand, say)
        kinds = [_kind(kind)] if kind else [k for k in ORDER if k in have]
        if not kinds:
            return f"{node}: nothing to repair"
        for k in kinds:
            prov.repair(model, n, k, have.get(k, {}))
            have.pop(k, None)
        faults = {k: v for k, v in (faults | {node: have}).items() if v}
        lab.save_state(faults=faults)
    return f"{node}: {', '.join(kinds)} repaired"


def repair_recorded(lab, prov, model: LabModel, progress) -> None:
    """Every recorded fault, for `up` (which holds the lab's lock); nodes no longer in the lab are dropped."""
    faults = lab.state().get("faults") or {}
    by_name = {n.name: n for n in model.nodes}
    for kind in ORDER:
        for node, have in faults.items():
            if kind in have and node in by_name:
                progress.info(f"  repairing {node}: {kind}")
                prov.repair(model, by_name[node], kind, have[kind])
    lab.save_state(faults={})
