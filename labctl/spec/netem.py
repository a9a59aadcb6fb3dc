"""Impairment values (tc netem delay/jitter/loss, tc tbf rate): their checks, the tc commands that
set them, and how `tc -j qdisc show` reads back. Pure text: live/impair.py runs them on nodes."""

from __future__ import annotations

import json
import re
import shlex

from labctl.errors import UsageError

TIME = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%?$")
TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
NO_NETEM = "this kernel has no sch_netem: delay/jitter/loss unavailable; rate works"


def _ms(flag: str, v: str) -> float:
    m = TIME.match(v.strip().lower())
    if not m:
        raise UsageError(f"{flag} {v!r}: not a time", "e.g. 50ms, 200us, 1s")
    ms = float(m[1]) * TIME_UNITS[m[2]]
    if not 0 <= ms <= 60_000:
        raise UsageError(f"{flag} {v}: out of range", "0 to 60s")
    return ms


def spec(delay: str | None = None, jitter: str | None = None, loss: str | None = None, rate: str | None = None):
    """Validated impairment: {delay_ms, jitter_ms, loss_pct, rate_bit}; UsageError on bad values."""
    s: dict = {}
    if delay is not None:
        s["delay_ms"] = _ms("--delay", delay)
    if jitter is not None:
        if delay is None:
            raise UsageError("--jitter needs --delay", "e.g. --delay 50ms --jitter 5ms")
        s["jitter_ms"] = _ms("--jitter", jitter)
        if s["jitter_ms"] > s["delay_ms"]:
            raise UsageError(f"--jitter {jitter} is larger than --delay {delay}")
    if loss is not None:
        m = PERCENT.match(loss.strip())
        if not m or not 0 <= float(m[1]) <= 100:
            raise UsageError(f"--loss {loss!r}: out of range", "a percentage 0%..100%")
        s["loss_pct"] = float(m[1])
    if rate is not None:
        m = RATE.match(rate.strip().lower())
        if not m:
            raise UsageError(f"--rate {rate!r}: not a rate", "e.g. 10mbit, 512kbit, 1gbit")
        bits = float(m[1]) * RATE_UNITS[m[2]]
        if not 8_000 <= bits <= 100e9:
            raise UsageError(f"--rate {rate}: out of range", "8kbit to 100gbit")
        s["rate_bit"] = int(bits)
    if not s:
        raise UsageError("nothing to impair", "give --delay/--jitter/--loss/--rate, or --clear")
    return s


def commands(iface: str, s: dict) -> list[str]:
    """tc commands (without sudo) that replace the interface's root qdisc with the impairment."""
    dev = shlex.quote(iface)
    cmds = [f"tc qdisc del dev {dev} root 2>/dev/null; true"]
    parent = "root handle 1:"
    if {"delay_ms", "loss_pct"} & s.keys():
        netem = "netem"
        if "delay_ms" in s:
            netem += f" delay {s['delay_ms']:g}ms" + (f" {s['jitter_ms']:g}ms" if s.get("jitter_ms") else "")
        if "loss_pct" in s:
            netem += f" loss {s['loss_pct']:g}%"
        cmds.append(f"tc qdisc add dev {dev} root handle 1: {netem}")
        parent = "parent 1:1 handle 10:"
    if "rate_bit" in s:
        burst = max(s["rate_bit"] // 8 // 100, 3200)  # 10 ms worth, at least two full frames
        cmds.append(f"tc qdisc add dev {dev} {parent} tbf rate {s['rate_bit']}bit burst {burst} latency 50ms")
    return cmds


def clear_command(iface: str) -> str:
    return f"tc qdisc del dev {shlex.quote(iface)} root 2>/dev/null; true"


def show_command(iface: str) -> str:
    return f"tc -j qdisc show dev {shlex.quote(iface)}"


def describe(tc_json: str) -> str:
    """The impairment as one short text from `tc -j qdisc show`, "" if the interface has none."""
    try:
        qdiscs = json.loads(tc_json or "[]")
    except ValueError:
        return ""
    parts = []
    for q in qdiscs:
        o = q.get("options") or {}
        if q.get("kind") == "netem":
            if o.get("delay"):
                d = o["delay"]
                parts.append(
                    f"delay {d.get('delay', 0) * 1000:g}ms" + (f"±{d['jitter'] * 1000:g}ms" if d.get("jitter") else "")
                )
            if o.get("loss-random"):
                parts.append(f"loss {o['loss-random'].get('loss', 0) * 100:g}%")
        elif q.get("kind") == "tbf":
            parts.append(f"rate {_rate(o.get('rate', 0))}")
    return " ".join(parts)


SHOW_ALL = "tc -j qdisc show"


def describe_all(tc_json: str, main: str) -> str:
    """Every interface's impairment from `tc -j qdisc show` (all devices): the `main` interface's
    as describe() says it, any other's prefixed with its name ("vxlan.calico: delay 50ms")."""
    try:
        qdiscs = json.loads(tc_json or "[]")
    except ValueError:
        return ""
    by_dev: dict[str, list] = {}
    for q in qdiscs if isinstance(qdiscs, list) else []:
        if isinstance(q, dict):
            by_dev.setdefault(q.get("dev", ""), []).append(q)
    parts = []
    for dev in sorted(by_dev, key=lambda d: (d != main, d)):
        text = describe(json.dumps(by_dev[dev]))
        if text:
            parts.append(text if dev == main else f"{dev}: {text}")
    return "; ".join(parts)


def _rate(bytes_per_s: float) -> str:
    bits = bytes_per_s * 8
    for unit, f in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bits >= f:
            return f"{bits / f:g}{unit}"
    return f"{bits:g}bit"


def summary(s: dict) -> str:
    """A spec as describe() shows the qdiscs it makes, to tell whether a node already has it."""
    parts = []
    if "delay_ms" in s:
        parts.append(f"delay {s['delay_ms']:g}ms" + (f"±{s['jitter_ms']:g}ms" if s.get("jitter_ms") else ""))
    if "loss_pct" in s:
        parts.append(f"loss {s['loss_pct']:g}%")
    if "rate_bit" in s:
        parts.append(f"rate {_rate(s['rate_bit'] / 8)}")
    return " ".join(parts)
