"""The topology's checks of its optional blocks: impairments, the lab's own checks, qemu."""

from __future__ import annotations

import hashlib
import re
from ipaddress import IPv4Address
from pathlib import Path

from labctl.errors import UsageError
from labctl.spec import netem, providers
from labctl.spec.schedule import impairment_targets, workloads
from labctl.spec.schema import BUILT_IMAGES, Impairment, Topology
from labctl.spec.yamlsrc import Problem


def impairment_problems(t: Topology) -> list[Problem]:
    out, seen = [], set()
    for i, (imp, (node, iface)) in enumerate(zip(t.impairments or [], impairment_targets(t), strict=True)):
        path = ("impairments", i)
        n = t.nodes.get(node)
        if n is None:
            out.append(Problem(path + ("node",), f"{node!r} is not a node of this lab", f"nodes: {_some(t.nodes)}"))
            continue
        # what exists on every node: its LAN NIC and the tunnel device (labctl picks one per kernel)
        known = [n.interface or t.defaults.interface, "vxlan.calico", "tunl0"]
        if iface not in known:
            out.append(
                Problem(path + ("node",), f"no interface {iface!r} on {node}", f"interfaces: {', '.join(known)}")
            )
        if (node, iface) in seen:
            out.append(Problem(path + ("node",), f"{node}:{iface} is impaired twice", "one entry per interface"))
        seen.add((node, iface))
        try:
            netem.spec(imp.delay, imp.jitter, imp.loss, imp.rate)
        except UsageError as e:
            # the CLI's words, without its option dashes, at the field they name
            msg = e.message.replace("--", "")
            field = msg.split(" ")[0]
            out.append(Problem(path + ((field,) if field in Impairment.model_fields else ()), msg, e.hint))
    return out


def _some(names) -> str:
    names = list(names)
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def lab_check_problems(t: Topology) -> list[Problem]:
    out, names = [], set()
    pods = {w.name for w in workloads(t)}
    for i, c in enumerate(t.checks or []):
        path = ("checks", i)
        if not c.name.strip():
            out.append(Problem(path + ("name",), "must not be empty", None))
        elif any(not ch.isprintable() for ch in c.name):
            out.append(Problem(path + ("name",), f"{c.name!r} has a tab, newline or control character", "one line"))
        if c.name in names:
            out.append(Problem(path + ("name",), f"check {c.name!r} is declared twice", None))
        names.add(c.name)
        kinds = [k for k in ("exec", "reach", "route", "bgp") if getattr(c, k) is not None]
        if len(kinds) != 1:
            out.append(Problem(path, f"a check needs exactly one of exec, reach, route, bgp (has {len(kinds)})", None))
        for k in ("exec", "route", "bgp"):
            sub = getattr(c, k)
            if sub is not None and sub.node not in t.nodes:
                out.append(
                    Problem(path + (k, "node"), f"{sub.node!r} is not a node of this lab", f"nodes: {_some(t.nodes)}")
                )
        if c.reach is not None:
            ends = [x.strip() for x in c.reach.split("->")]
            if len(ends) != 2 or not all(ends):
                out.append(Problem(path + ("reach",), f"{c.reach!r} is not 'A -> B'", "e.g. pod-a -> pod-b"))
            else:
                for end in ends:
                    if end not in pods and end not in t.nodes:
                        out.append(
                            Problem(
                                path + ("reach",),
                                f"{end!r} is neither a workload nor a node of this lab",
                                f"workloads: {_some(sorted(pods))}",
                            )
                        )
        if c.route is not None and c.route.via is not None and c.route.via not in t.nodes:
            try:
                IPv4Address(c.route.via)
            except ValueError:
                out.append(Problem(path + ("route", "via"), f"{c.route.via!r} is neither a node nor an IPv4", None))
        if (c.expect is not None or c.expect_regex is not None) and c.exec is None:
            out.append(Problem(path, "expect/expect_regex apply to exec checks only", None))
        if c.expect is not None and c.expect_regex is not None:
            out.append(Problem(path, "expect and expect_regex are both set", "one of them"))
        if not 1 <= c.timeout <= 600:
            out.append(Problem(path + ("timeout",), f"{c.timeout} is out of range", "1..600 seconds"))
        if c.expect_regex is not None:
            try:
                re.compile(c.expect_regex)
            except re.error as e:
                out.append(Problem(path + ("expect_regex",), f"not a regular expression: {e}", None))
        if not 0 <= c.wait <= 600:
            out.append(Problem(path + ("wait",), f"{c.wait} is out of range", "0..600 seconds"))
        if not 0 <= c.retries <= 100:
            out.append(Problem(path + ("retries",), f"{c.retries} is out of range", "0..100"))
        if c.bgp is not None and c.bgp.established < 0:
            out.append(Problem(path + ("bgp", "established"), "must not be negative", None))
    return out


MAX_VM_MIB = 65536


def qemu_problems(t: Topology) -> list[Problem]:
    if t.qemu is None:
        return []
    if not providers.traits(t.provider).takes_qemu_block:
        return [Problem(("qemu",), f"a qemu block in a {t.provider} lab", "set provider: qemu, or remove it")]
    q, out = t.qemu, []
    for role in ("control_plane", "worker"):
        m = getattr(q, role)
        if m.memory < 1024:
            out.append(Problem(("qemu", role, "memory"), f"{m.memory} MiB is too little for a node", "at least 1024"))
        elif m.memory > MAX_VM_MIB:  # the host's memory is checked too, where the lab is built (provider checks)
            out.append(Problem(("qemu", role, "memory"), f"{m.memory} MiB is more than a lab VM needs", "<= 65536"))
        if not 1 <= m.cpus <= 64:
            out.append(Problem(("qemu", role, "cpus"), f"{m.cpus} vCPUs is not in 1..64", None))
    if q.image not in BUILT_IMAGES:
        out += _image_file_problems(q.image, q.sha256)
    return out


def _image_file_problems(path: str, sha256: str | None) -> list[Problem]:
    """Problems with a user-supplied image: missing file, no or wrong checksum."""
    p = Path(path).expanduser()
    if not p.is_file():
        hint = f"an image labctl builds ({', '.join(BUILT_IMAGES)}) or a path"
        return [Problem(("qemu", "image"), f"image {path!r} is not a file", hint)]
    if sha256 is None:
        hint = "sha256sum the file you trust and write it here"
        return [Problem(("qemu", "sha256"), f"image {path} needs its sha256", hint)]
    got = file_sha256(p)
    if got != sha256.lower():
        hint = "the file changed, or the checksum is wrong"
        return [Problem(("qemu", "sha256"), f"{p} has sha256 {got}, not {sha256}", hint)]
    return []


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(p: Path) -> str:
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]
