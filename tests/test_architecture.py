"""The architecture's rules (issue 20, docs/architecture.md), checked on labctl's source: the import
contracts in pyproject.toml (layers, and which layer may use ansible, SSH, Typer), no import cycles
counting function-local imports, function-local imports of labctl only in cli/ (start-up time), small
modules and functions, and the provider boundary typed (no hook takes a dict)."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from labctl import providers
from labctl.providers.base import Provider
from labctl.spec.providers import REGISTRY

pytestmark = pytest.mark.unit

PKG = ROOT / "labctl"
FILES = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in PKG.rglob("*.py")}
TREES = {m: ast.parse(p.read_text()) for m, p in FILES.items()}


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The labctl modules an import statement loads (a package's name for `from pkg import name` of a
    non-module name)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in FILES]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        parts = parts if FILES[module].name == "__init__.py" else parts[:-1]
        base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
    return [
        f"{base}.{a.name}" if f"{base}.{a.name}" in FILES else base
        for a in node.names
        if base in FILES or f"{base}.{a.name}" in FILES
    ]


def _imports(module: str, local_only: bool = False) -> set[str]:
    out = set()
    tree = TREES[module]
    funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    nodes = [s for f in funcs for s in ast.walk(f)] if local_only else list(ast.walk(tree))
    for n in nodes:
        if isinstance(n, ast.Import | ast.ImportFrom):
            out |= {t for t in _targets(module, n) if t != module}
    return out


def test_imports_follow_the_contracts():
    lint = Path(sys.executable).with_name("lint-imports")
    p = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr


def test_no_module_is_in_an_import_cycle():
    graph = {m: _imports(m) for m in FILES}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                on.discard(w)
                comp.append(w)
            on.discard(v)
            if comp:
                cycles.append(sorted([v, *comp]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_function_local_imports_of_labctl_only_in_cli():
    local = {m: sorted(_imports(m, local_only=True)) for m in FILES if not m.startswith("labctl.cli")}
    assert {m: t for m, t in local.items() if t} == {}


def test_no_module_over_500_lines():
    assert {m: n for m, p in FILES.items() if (n := len(p.read_text().splitlines())) > 500} == {}


def test_at_most_three_functions_over_60_lines_each_saying_why():
    long = {}
    for m, tree in TREES.items():
        lines = FILES[m].read_text().splitlines()
        for f in ast.walk(tree):
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.end_lineno - f.lineno + 1 > 60:
                first = min([f.lineno, *(d.lineno for d in f.decorator_list)])
                long[f"{m}.{f.name}"] = lines[first - 2].strip().startswith("#")  # the comment above says why
    assert len(long) <= 3, sorted(long)
    assert [f for f, why in long.items() if not why] == []


HOOKS = [n for n, v in vars(Provider).items() if callable(v) and not n.startswith("_")]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_no_provider_hook_takes_a_dict(name):
    cls = providers.kind(name)
    assert HOOKS, "Provider declares its hooks"
    for hook in HOOKS:
        for p in list(inspect.signature(getattr(cls, hook)).parameters.values())[1:]:
            assert "dict" not in str(p.annotation), f"{cls.__name__}.{hook}({p.name}: {p.annotation})"
            assert p.annotation is not inspect.Parameter.empty or p.name in ("progress", "record"), (
                f"{cls.__name__}.{hook}({p.name}) has no type"
            )


def test_no_provider_name_is_compared_outside_providers():
    """A provider is asked (its traits, its hooks), never named: no string constant that is a provider's
    name in a comparison or a membership test outside providers/ and the registry."""
    hits = []
    for m, tree in TREES.items():
        if m.startswith("labctl.providers") or m == "labctl.spec.providers":
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.Compare):
                consts = [c for c in ast.walk(n) if isinstance(c, ast.Constant) and c.value in REGISTRY]
                hits += [f"{m}:{n.lineno}" for _ in consts[:1]]
    assert hits == []
