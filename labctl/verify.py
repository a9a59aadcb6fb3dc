"""`labctl verify`: the lab's network checked from live nodes; exit 0 only if every check passes."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass

from labctl import nodes as live
from labctl.inspect import table


@dataclass
class Check:
    check: str
    target: str
    ok: bool
    detail: str = ""


def _ping_pairs(data: dict) -> list[tuple[dict, dict]]:
    """Every pair of workloads on different nodes, pinged one way (the reply tests the way back)."""
    pods = data["workloads"]
    return [(a, b) for i, a in enumerate(pods) for b in pods[i + 1 :] if a["node"] != b["node"]]


def run_checks(lab) -> list[Check]:
    data = lab.data()
    nodes = data["nodes"]
    by_name = {n["name"]: n for n in nodes}
    netns = {p["name"]: p["netns"] for n in nodes for p in n.get("pods", [])}
    pairs = _ping_pairs(data)
    # the pings ride in each source node's probe session
    extra: dict[str, dict[str, str]] = {}
    for a, b in pairs:
        extra.setdefault(a["node"], {})[f"{a['name']}->{b['name']}"] = (
            f"ip netns exec {shlex.quote(netns[a['name']])} ping -c1 -W1 -q {shlex.quote(b['ip'])}"
        )
    facts = {f.name: f for f in live.gather(lab.dir, nodes, extra)}
    out: list[Check] = []
    for n in nodes:
        f = facts[n["name"]]
        out.append(Check("ssh", n["name"], f.reachable, f.error or f"hostname {f.hostname}"))
        if not f.reachable:
            continue
        if f.hostname != n["name"]:
            out.append(Check("hostname", n["name"], False, f"hostname is {f.hostname!r}"))
        peers = [p for p in nodes if p["name"] != n["name"]]
        sessions = {s.name: s for s in f.sessions}
        bad = [p["name"] for p in peers if not (sessions.get(p["mesh_name"]) and sessions[p["mesh_name"]].established)]
        detail = (
            f"{len(peers) - len(bad)}/{len(peers)} Established"
            + (f"; not: {', '.join(bad)}" if bad else "")
            + ("" if f.bird_running else "; BIRD not running")
        )
        out.append(Check("bgp", n["name"], not bad and f.bird_running, detail))
        routed = {r.get("dst") for r in f.routes if r.get("type", "unicast") == "unicast"}
        missing = [p["block"] for p in peers if p["block"] not in routed]
        out.append(
            Check(
                "routes",
                n["name"],
                not missing,
                f"no route to {', '.join(missing)}" if missing else f"{len(peers)} peer blocks routed",
            )
        )
        want = n["labels"]
        out.append(
            Check(
                "labels",
                n["name"],
                f.labels == want,
                f"applied {f.labels}, declared {want}"
                if f.labels != want
                else (",".join(f"{k}={v}" for k, v in want.items()) or "(none)"),
            )
        )
    for w in data["workloads"]:
        node = by_name[w["node"]]
        applied = node["base_labels"] | facts[w["node"]].labels  # labels as the node has them now
        mismatch = {k: v for k, v in w["node_selector"].items() if applied.get(k) != v}
        out.append(
            Check(
                "placement",
                w["name"],
                not mismatch,
                f"on {w['node']}" + (f": node lacks {mismatch}" if mismatch else ""),
            )
        )
    for a, b in pairs:
        key = f"{a['name']}->{b['name']}"
        f = facts[a["node"]]
        text = f.extra.get(key, "")
        ok = f.reachable and "rc=0" in text
        rtt = next((x.split("=")[1].split("/")[1] for x in text.splitlines() if x.startswith("rtt")), "")
        detail = (
            f"{a['ip']} -> {b['ip']}" + (f" {rtt} ms" if ok else " no reply")
            if f.reachable
            else f"{a['node']} unreachable"
        )
        out.append(Check("ping", key, ok, detail))
    return out


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
