"""The topology's own checks (`checks:`): an exercise that checks itself, run by `labctl verify`
after the built-in checks.

Each round reads only the nodes its checks name, one SSH session each (the same probe as verify's:
routes and BGP sessions come with it; exec commands and reach pings ride in it). A check waits
`wait` seconds before its first try and is tried again `retries` times, 1 s apart, while it fails."""

from __future__ import annotations

import re
import shlex
import time

from labctl import providers
from labctl.live import iproute
from labctl.live import nodes as live
from labctl.observe.checks import Check, skip
from labctl.plan.model import LabModel, Node
from labctl.spec import calico
from labctl.spec.providers import traits
from labctl.spec.schema import LabCheck

KINDS = ("exec", "reach", "route", "bgp")
KILL_AFTER = 2  # seconds between timeout's TERM and its KILL
TIMED_OUT = (124, 137)  # coreutils timeout: TERM ended it (124), or the KILL after it (128+9)
WORKLOAD_LABEL = "labctl.io/workload"


def kind(spec: LabCheck) -> str:
    return next(k for k in KINDS if getattr(spec, k) is not None)


def _ends(spec: LabCheck) -> tuple[str, str]:
    a, b = (x.strip() for x in spec.reach.split("->"))
    return a, b


def _runs_on(model: LabModel, spec: LabCheck) -> str:
    """The node whose probe answers this check."""
    k = kind(spec)
    if k != "reach":
        return getattr(spec, k).node
    src = _ends(spec)[0]
    w = next((w for w in model.workloads if w.name == src), None)
    if w is None:
        return src
    if traits(model.provider).labels_in_kubernetes:
        return model.control_plane.name  # kubectl exec
    return w.node


def _reach_command(model: LabModel, spec: LabCheck, node: Node) -> str:
    src, dst = _ends(spec)
    workloads = {w.name: w for w in model.workloads}
    addresses = {n.name: n.address for n in model.nodes}
    cluster = traits(model.provider).labels_in_kubernetes
    kubectl = f"{live.sudo(node)}{live.KUBECTL}"
    if dst in workloads and cluster:
        sel = shlex.quote(f"{WORKLOAD_LABEL}={dst}")
        target = f"$({kubectl} get pod -l {sel} -o jsonpath='{{.items[0].status.podIP}}')"
    else:
        target = shlex.quote(workloads[dst].ip if dst in workloads else addresses[dst])
    ping = f"ping -c1 -W{2 if cluster else 1} -q {target}"  # as verify pings
    if src not in workloads:
        return ping
    if cluster:
        pod = f"$({kubectl} get pod -l {shlex.quote(f'{WORKLOAD_LABEL}={src}')} -o name | head -n1)"
        return f"{kubectl} exec {pod} -- {ping}"
    netns = next(p.netns for n in model.nodes for p in n.pods if p.name == src)
    return f"{live.sudo(node)}ip netns exec {shlex.quote(netns)} {ping}"


def _round(lab, model: LabModel, specs: list[tuple[int, LabCheck]]) -> dict[int, Check]:
    by_name = {n.name: n for n in model.nodes}
    extra: dict[str, dict[str, str]] = {}
    budget: dict[str, float] = {}  # seconds the node's probe may take: its checks run one after another
    for i, spec in specs:
        node = by_name[_runs_on(model, spec)]
        k = kind(spec)
        # a try that runs past its timeout is ended there (TERM, KILL 2 s later) and fails
        limit = f"timeout -k {KILL_AFTER} {spec.timeout:g}"
        if k == "exec":
            cmd = f"{live.sudo(node)}{limit} sh -c {shlex.quote(spec.exec.command)} 2>&1"
        elif k == "reach":
            cmd = f"{limit} sh -c {shlex.quote(_reach_command(model, spec, node))} 2>&1"
        else:
            continue
        extra.setdefault(node.name, {})[f"c{i}"] = cmd
        budget[node.name] = budget.get(node.name, 0.0) + spec.timeout + KILL_AFTER
    wanted = list(dict.fromkeys(_runs_on(model, s) for _, s in specs))
    prov = providers.get(model.provider, lab)
    facts = live.gather(
        lab.dir,
        [by_name[n] for n in wanted],
        extra,
        model.provider,
        prov.birdc,
        calico.lab_protocols(model),
        timeout=30.0 + max(budget.values(), default=0.0),
    )
    by_node = {f.name: f for f in facts}
    out = {}
    for i, spec in specs:
        node = _runs_on(model, spec)
        f = by_node[node]
        if not f.reachable:
            out[i] = skip("check", spec.name, node)
            continue
        ok, detail = EVALUATE[kind(spec)](model, spec, f, f.extra.get(f"c{i}", ""))
        out[i] = Check("check", spec.name, ok, f"{kind(spec)}: {detail}")
    return out


def _output(text: str) -> tuple[int, str]:
    body, _, rc = text.rpartition("rc=")
    return (int(rc.strip()) if rc.strip().isdigit() else -1), body


def _exec(model: LabModel, spec: LabCheck, f, text) -> tuple[bool, str]:
    rc, out = _output(text)
    where = f"{spec.exec.node}: {spec.exec.command}"
    if rc in TIMED_OUT:
        return False, f"{where}: timed out (timeout: {spec.timeout:g} s), ended on the node"
    if rc != 0:
        last = out.strip().splitlines()[-1:] or [""]
        return False, f"{where}: exit {rc} {last[0]}".rstrip()
    if spec.expect is not None and spec.expect not in out:
        return False, f"{where}: output lacks {spec.expect!r}"
    if spec.expect_regex is not None and not re.search(spec.expect_regex, out, re.MULTILINE):
        return False, f"{where}: output does not match /{spec.expect_regex}/"
    return True, where + (" (output matches)" if spec.expect or spec.expect_regex else " (exit 0)")


def _reach(model: LabModel, spec: LabCheck, f, text) -> tuple[bool, str]:
    rc, out = _output(text)
    src, dst = _ends(spec)
    if rc in TIMED_OUT:
        return False, f"{src} -> {dst} timed out (timeout: {spec.timeout:g} s), ended on the node"
    rtt = next((x.split("=")[1].split("/")[1] for x in out.splitlines() if x.startswith(("rtt", "round-trip"))), "")
    return rc == 0, f"{src} -> {dst}" + (f" {rtt} ms" if rc == 0 and rtt else "" if rc == 0 else " no reply")


def _route(model: LabModel, spec: LabCheck, f, _text) -> tuple[bool, str]:
    r = spec.route
    prefix, via, node = str(r.prefix), r.via, r.node
    found = [x for x in f.routes if x.get("dst") == prefix or (x.get("dst") == "default" and prefix == "0.0.0.0/0")]
    if not found:
        return False, f"{node} has no route to {prefix}"
    line = iproute.short_route(found[0])
    if via is None:
        return True, f"{node}: {line}"
    peer = model.node(via)
    want = {peer.address, peer.tunnel_ip} - {None} if peer else {via}
    gws = {x.get("gateway") for x in found} | {h.get("gateway") for x in found for h in x.get("nexthops", [])}
    if want & gws:
        return True, f"{node}: {line}"
    return False, f"{node}: {line}, not via {via}"


def _bgp(model: LabModel, spec: LabCheck, f, _text) -> tuple[bool, str]:
    want = spec.bgp.established
    got = sum(1 for s in f.sessions if s.established)
    if not f.bird_running:
        return want == 0, f"{spec.bgp.node}: BIRD not running (0 Established, want {want})"
    down = [s.name for s in f.sessions if not s.established and s.name.startswith(("Mesh_", "Node_"))]
    return got == want, f"{spec.bgp.node}: {got} Established, want {want}" + (
        f"; not: {', '.join(down)}" if down else ""
    )


EVALUATE = {"exec": _exec, "reach": _reach, "route": _route, "bgp": _bgp}


def run(lab, model: LabModel | None = None) -> list[Check]:
    """Every check of the lab's topology, in its order."""
    model = model if model is not None else lab.model()
    specs = list(enumerate(model.checks or []))
    results: dict[int, Check] = {}
    tries: dict[int, int] = {}
    start = time.monotonic()
    while len(results) < len(specs):
        pending = [(i, s) for i, s in specs if i not in results]
        elapsed = time.monotonic() - start
        due = [(i, s) for i, s in pending if s.wait <= elapsed]
        if not due:
            time.sleep(max(0.0, min(s.wait for _, s in pending) - elapsed))
            continue
        for i, c in _round(lab, model, due).items():
            tries[i] = tries.get(i, 0) + 1
            if c.ok or c.skipped or tries[i] > specs[i][1].retries:
                results[i] = c
        if any(i in tries and i not in results for i, _ in specs):
            time.sleep(1.0)
    return [results[i] for i, _ in specs]
