"""The topology file: `load()` reads it into a `Topology` (schema.py) or raises `TopologyError` with
one `FILE:LINE: path: message (hint)` line per problem: YAML's, the fields' types (pydantic's, in
words), the checks of rules*.py and what the plan finds (schedule.py: a block with no address left)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from labctl.errors import TopologyError
from labctl.spec import rules, schedule, yamlsrc
from labctl.spec.schema import Impairment, LabCheck, Node, Ssh, Topology, Workload
from labctl.spec.yamlsrc import Problem


def load(path: Path) -> Topology:
    src = yamlsrc.load_file(path)
    return from_source(src)


def loads(text: str, name: str = "<topology>") -> Topology:
    return from_source(yamlsrc.load(text, name))


def from_source(src: yamlsrc.Source) -> Topology:
    if src.problems and src.data is None:
        raise TopologyError([src.format(p) for p in src.problems])
    problems = list(src.problems) + _host_bits(src)
    try:
        topo = Topology.model_validate(src.data)
    except ValidationError as e:
        raise TopologyError([src.format(p) for p in problems + _pydantic_problems(e, src.data)]) from None
    problems += rules.check(topo)
    if not problems:
        problems += schedule.plan_problems(topo)
    if problems:
        raise TopologyError([src.format(p) for p in _dedupe(problems)])
    return topo


# --- errors from pydantic, one line per field ---------------------------------------------

_TYPE_WORDS = {
    "string_type": ("must be a string", "quote it"),
    "int_type": ("must be an integer", None),
    "bool_type": ("must be true or false", None),
    "dict_type": ("must be a mapping", None),
    "list_type": ("must be a list", None),
    "model_type": ("must be a mapping", None),
    "missing": ("is required", None),
    "extra_forbidden": ("unknown field", None),
    "too_short": ("must not be empty", None),
}


def _pydantic_problems(err: ValidationError, data: dict) -> list[Problem]:
    out = []
    for e in err.errors(include_url=False):
        path = tuple(x for x in e["loc"] if x != "[key]")
        kind = e["type"]
        msg, hint = _TYPE_WORDS.get(kind, (e["msg"], None))
        if kind == "extra_forbidden":
            parent = _model_at(path[:-1])
            valid = ", ".join(parent.model_fields) if parent else ""
            hint = f"valid fields: {valid}" if valid else None
            msg = f"unknown field {path[-1]!r}"
        elif kind == "literal_error":
            msg = f"{e['input']!r} is not one of {e['ctx']['expected']}"
        elif kind == "value_error":
            msg = str(e["ctx"]["error"]) if "ctx" in e else e["msg"]
        elif kind == "string_type" and isinstance(e.get("input"), bool | float | int):
            # YAML turns no/yes/on/off into booleans and 1.30 into a float
            hint = f"YAML read {e['input']!r}; quote the value"
        out.append(Problem(path, msg, hint))
    return out


def _model_at(path: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Topology
    i = 0
    while model is not None and i < len(path):
        name = path[i]
        field = model.model_fields.get(name) if isinstance(name, str) else None
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", ())
        if name == "nodes" or name == "ssh" and model is Node:
            model = Node if name == "nodes" else Ssh
            i += 2 if name == "nodes" else 1
            continue
        if name in ("workloads", "impairments", "checks"):
            model = {"workloads": Workload, "impairments": Impairment, "checks": LabCheck}[name]
            i += 2
            continue
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        i += 1
    return model


def _host_bits(src: yamlsrc.Source) -> list[Problem]:
    out = []
    data = src.data if isinstance(src.data, dict) else {}
    nets = data.get("networks") if isinstance(data.get("networks"), dict) else {}
    for path in (
        ("network", "lan"),
        *(("networks", name, "lan") for name in nets),
        ("kubernetes", "pod_subnet"),
        ("kubernetes", "service_subnet"),
        ("calico", "pool"),
    ):
        v: Any = data
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, str):
            try:
                ipaddress.IPv4Network(v)
            except ValueError:
                try:
                    n = ipaddress.IPv4Network(v, strict=False)
                    out.append(Problem(path, f"{v} has host bits set", f"did you mean {n}?"))
                except ValueError:
                    pass
    return out


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        k = (p.path, p.message)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out
