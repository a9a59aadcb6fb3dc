"""`labctl verify`: the lab's network checked from live nodes; exit 0 only if every check passes.

collect() reads the nodes over SSH (and, on vm labs, the Kubernetes API through the control
plane); evaluate() turns what was read into checks, with no I/O, the same for both providers
wherever the lab works the same way."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass, field

from labctl import nodes as live
from labctl.inspect import table

WORKLOAD_LABEL = "labctl.io/workload"


@dataclass
class Check:
    check: str
    target: str
    ok: bool
    detail: str = ""


@dataclass
class Observed:
    facts: dict  # node name -> NodeFacts
    workloads: list[dict]  # name, node, ip: where each workload really is
    pings: dict[str, str] = field(default_factory=dict)  # "a->b" -> command output ending in rc=N
    dns: str | None = None  # vm: output of a cluster DNS lookup from a pod


ALL_PAIRS_UP_TO = 12


def _ping_pairs(workloads: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of workloads on different nodes, pinged one way (the reply tests the way back): every
    pair in a small lab; in a big one a ring, each workload to the next one on another node, so
    every node's pods send and receive once and the count grows with the lab, not its square."""
    ws = [w for w in workloads if w["node"]]
    if len(ws) <= ALL_PAIRS_UP_TO:
        return [(a, b) for i, a in enumerate(ws) for b in ws[i + 1 :] if a["node"] != b["node"]]
    out = []
    for i, a in enumerate(ws):
        b = next((ws[(i + k) % len(ws)] for k in range(1, len(ws)) if ws[(i + k) % len(ws)]["node"] != a["node"]), None)
        if b is not None:
            out.append((a, b))
    return out


def _api_workloads(k8s: dict) -> list[dict]:
    out = []
    for item in k8s.get("items", []):
        labels = item.get("metadata", {}).get("labels") or {}
        if item.get("kind") == "Pod" and WORKLOAD_LABEL in labels:
            out.append(
                {
                    "name": labels[WORKLOAD_LABEL],
                    "pod": item["metadata"]["name"],
                    "node": item.get("spec", {}).get("nodeName", ""),
                    "ip": item.get("status", {}).get("podIP", ""),
                }
            )
    return sorted(out, key=lambda w: w["name"])


def collect(lab) -> tuple[dict, Observed]:
    data = lab.data()
    nodes = data["nodes"]
    if data["provider"] in ("vm", "qemu"):
        facts = {f.name: f for f in live.gather(lab.dir, nodes, provider=data["provider"])}
        cp = next(n for n in nodes if n["role"] == "control-plane")
        workloads = _api_workloads(facts[cp["name"]].k8s)
        obs = Observed(facts, workloads)
        if facts[cp["name"]].reachable and workloads:
            k = f"{live.sudo(cp)}{live.KUBECTL}"
            ping = "{} exec {} -- ping -c1 -W2 -q {}"
            cmds = {
                f"{a['name']}->{b['name']}": ping.format(k, shlex.quote(a["pod"]), shlex.quote(b["ip"]))
                for a, b in _ping_pairs(workloads)
            }
            cmds["dns"] = (
                f"{k} exec {shlex.quote(workloads[0]['pod'])} -- nslookup kubernetes.default.svc.cluster.local"
            )
            with live.NodeShell(lab.dir, cp) as s:
                for key, cmd in cmds.items():
                    rc, out, err = s.run(f"{cmd} 2>&1", timeout=30)
                    text = f"{out}{err}rc={rc}\n"
                    if key == "dns":
                        obs.dns = text
                    else:
                        obs.pings[key] = text
        return data, obs
    netns = {p["name"]: p["netns"] for n in nodes for p in n.get("pods", [])}
    # the pings ride in each source node's probe session
    extra: dict[str, dict[str, str]] = {}
    for a, b in _ping_pairs(data["workloads"]):
        extra.setdefault(a["node"], {})[f"{a['name']}->{b['name']}"] = (
            f"ip netns exec {shlex.quote(netns[a['name']])} ping -c1 -W1 -q {shlex.quote(b['ip'])}"
        )
    facts = {f.name: f for f in live.gather(lab.dir, nodes, extra)}
    pings = {k: v for f in facts.values() for k, v in f.extra.items()}
    return data, Observed(facts, data["workloads"], pings)


def evaluate(data: dict, obs: Observed) -> list[Check]:
    nodes = data["nodes"]
    vm = data["provider"] in ("vm", "qemu")
    facts = obs.facts
    api = next((f.k8s for f in facts.values() if f.k8s), {}) if vm else {}
    api_nodes = {i["metadata"]["name"]: i for i in api.get("items", []) if i.get("kind") == "Node"}
    live_labels = {
        n["name"]: (api_nodes.get(n["name"], {}).get("metadata", {}).get("labels") or {})
        if vm
        else facts[n["name"]].labels
        for n in nodes
    }
    # the blocks the nodes really announce (Calico IPAM picks them on vm labs)
    blocks = {n["name"]: facts[n["name"]].block or n["block"] for n in nodes}
    out: list[Check] = []
    for n in nodes:
        f = facts[n["name"]]
        out.append(Check("ssh", n["name"], f.reachable, f.error or f"hostname {f.hostname}"))
        if not f.reachable:
            continue
        if f.hostname != n["name"]:
            out.append(Check("hostname", n["name"], False, f"hostname is {f.hostname!r}"))
        if vm:
            cond = {
                c["type"]: c["status"] for c in api_nodes.get(n["name"], {}).get("status", {}).get("conditions", [])
            }
            out.append(
                Check(
                    "ready",
                    n["name"],
                    cond.get("Ready") == "True",
                    "Ready" if cond.get("Ready") == "True" else f"Ready={cond.get('Ready', 'not in the API')}",
                )
            )
        peers = n["peers"]
        sessions = {s.name: s for s in f.sessions}
        bad = [p["name"] for p in peers if not (sessions.get(p["protocol"]) and sessions[p["protocol"]].established)]
        detail = (
            f"{len(peers) - len(bad)}/{len(peers)} Established"
            + (f"; not: {', '.join(bad)}" if bad else "")
            + ("" if f.bird_running else "; BIRD not running")
        )
        out.append(Check("bgp", n["name"], not bad and f.bird_running, detail))
        routed = {r.get("dst") for r in f.routes if r.get("type", "unicast") == "unicast"}
        missing = [blocks[p["name"]] for p in peers if blocks[p["name"]] not in routed]
        out.append(
            Check(
                "routes",
                n["name"],
                not missing,
                f"no route to {', '.join(missing)}" if missing else f"{len(peers)} peer blocks routed",
            )
        )
        want, have = n["labels"], live_labels[n["name"]]
        # Kubernetes adds labels of its own; netns nodes carry exactly the declared ones
        ok = all(have.get(k) == v for k, v in want.items()) if vm else have == want
        out.append(
            Check(
                "labels",
                n["name"],
                ok,
                (",".join(f"{k}={v}" for k, v in want.items()) or "(none)")
                if ok
                else f"applied {have}, declared {want}",
            )
        )
    if vm:
        ds = next(
            (
                i
                for i in api.get("items", [])
                if i.get("kind") == "DaemonSet" and i["metadata"]["name"] == "calico-node"
            ),
            None,
        )
        st = (ds or {}).get("status", {})
        ready = ds is not None and st.get("numberReady", 0) == st.get("desiredNumberScheduled", -1) > 0
        out.append(
            Check(
                "calico-node",
                "calico-system",
                ready,
                f"{st.get('numberReady', 0)}/{st.get('desiredNumberScheduled', 0)} ready" if ds else "no DaemonSet",
            )
        )
    by_name = {n["name"]: n for n in nodes}
    placed = {w["name"]: w for w in obs.workloads}
    for w in data["workloads"]:
        where = placed.get(w["name"], {}).get("node")
        if not where or where not in by_name:
            out.append(Check("placement", w["name"], False, "not running"))
            continue
        applied = by_name[where]["base_labels"] | live_labels[where]  # labels as the node has them now
        mismatch = {k: v for k, v in w["node_selector"].items() if applied.get(k) != v}
        out.append(
            Check(
                "placement", w["name"], not mismatch, f"on {where}" + (f": node lacks {mismatch}" if mismatch else "")
            )
        )
    for a, b in _ping_pairs(obs.workloads):
        key = f"{a['name']}->{b['name']}"
        text = obs.pings.get(key, "")
        ok = "rc=0" in text
        rtt = next(
            (x.split("=")[1].split("/")[1] for x in text.splitlines() if x.startswith(("rtt", "round-trip"))), ""
        )
        out.append(Check("ping", key, ok, f"{a['ip']} -> {b['ip']}" + (f" {rtt} ms" if ok else " no reply")))
    if vm and obs.workloads:
        ok = obs.dns is not None and "rc=0" in obs.dns
        out.append(Check("dns", "kubernetes.default", ok, "resolved from a pod" if ok else "lookup failed"))
    return out


def run_checks(lab) -> list[Check]:
    return evaluate(*collect(lab))


def verify(lab, wait: float = 5.0) -> list[Check]:
    """Checks, repeated until all pass or `wait` seconds are over (BGP may still be converging)."""
    deadline = time.monotonic() + wait
    while True:
        checks = run_checks(lab)
        if all(c.ok for c in checks) or time.monotonic() >= deadline:
            return checks
        time.sleep(0.5)


def format(checks: list[Check], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(c) for c in checks], indent=2)
    body = [[c.check, c.target, "PASS" if c.ok else "FAIL", c.detail] for c in checks]
    passed = sum(c.ok for c in checks)
    return table(["CHECK", "TARGET", "RESULT", "DETAIL"], body) + f"\n\n{passed} passed, {len(checks) - passed} failed"
