"""`labctl impair`: delay, jitter and loss (tc netem) and a rate limit (tc tbf) on a node's interface.

The qdiscs go on the node's egress, set over the node's SSH like every other command. Kernels
without sch_netem (this one, for one) still limit the rate with tbf; delay/jitter/loss are then
refused before anything changes."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from labctl import fanout
from labctl.errors import LabctlError, UsageError
from labctl.live.nodes import NodeShell, sudo
from labctl.plan.model import LabModel, Node, Router
from labctl.spec import netem


def netem_on_this_host() -> bool:
    """Whether this host's kernel has sch_netem: tried for real on the loopback of a throwaway
    network namespace (gone with the process), which is exact whether netem is a module or built in."""

    if shutil.which("unshare") is None or shutil.which("tc") is None:
        return Path("/sys/module/sch_netem").exists()
    try:
        p = subprocess.run(
            ["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return Path("/sys/module/sch_netem").exists()
    if p.returncode != 0 and "unknown" not in p.stderr.lower():
        return Path("/sys/module/sch_netem").exists()  # not root, say: the module is the next best sign
    return p.returncode == 0


def needs_netem(model: LabModel) -> list[str]:
    """The topology impairments (node:iface) that need netem (delay, jitter or loss)."""
    return [f"{i.node}:{i.interface}" for i in model.impairments or [] if {"delay_ms", "loss_pct"} & i.spec.keys()]


def apply(shell, node: Node | Router, iface: str, s: dict | None) -> None:
    """Set (or with s=None clear) the impairment; a missing netem refuses before anything changes."""
    p = sudo(node)
    if s is None:
        shell.run(p + netem.clear_command(iface), timeout=15)
        return
    rc, _, _ = shell.run(f"{p}ip -o link show dev {shlex.quote(iface)}", timeout=15)
    if rc != 0:
        raise UsageError(f"no interface {iface!r} on {node.name}")
    cmds = netem.commands(iface, s)
    for c in cmds:
        rc, out, err = shell.run(p + c, timeout=15)
        if rc != 0:
            shell.run(p + netem.clear_command(iface), timeout=15)  # all or nothing
            if "netem" in c and "unknown" in err.lower():
                raise LabctlError(netem.NO_NETEM, "use --rate alone, or a kernel with sch_netem (modprobe sch_netem)")
            raise LabctlError(f"{node.name}: {c}: {(err or out).strip()}")


def shell(prov, lab_dir, node: Node | Router):
    """Where an impairment is set, read and cleared: from the host where the provider can enter the
    node (netns nodes, lab routers), as the node's own link may be the impaired one (50% loss makes its
    SSH time out); else over SSH, tried again with longer timeouts."""
    host = prov.host_shell(node) if prov is not None else None
    return host if host is not None else NodeShell.patient(lab_dir, node)


def reconcile(lab_dir, model: LabModel, previous: list[str], prov=None) -> list[str]:
    """`up`: give every node interface the topology's impairment and clear the ones a previous `up`
    set that the topology no longer has (impairments set by `labctl impair` are left alone).
    Returns the impaired NODE:IFACE list to record in the lab state."""
    want = {(i.node, i.interface): i.spec for i in model.impairments or []}
    by_name = {n.name: n for n in model.nodes}
    todo: dict[str, list] = {}
    for (node, iface), s in want.items():
        todo.setdefault(node, []).append((iface, s))
    for entry in previous:
        node, _, iface = entry.partition(":")
        if (node, iface) not in want and node in by_name:
            todo.setdefault(node, []).append((iface, None))

    def one(item) -> None:
        name, items = item
        n = by_name[name]
        with shell(prov, lab_dir, n) as sh:
            for iface, s in items:
                _, out, _ = sh.run(sudo(n) + netem.show_command(iface), timeout=15)
                if s is not None and netem.describe(out) == netem.summary(s):
                    continue  # already so: a second `up` changes nothing
                if s is None and not netem.describe(out):
                    continue
                apply(sh, n, iface, s)

    fanout.each(one, list(todo.items()))
    return [f"{node}:{iface}" for node, iface in want]
