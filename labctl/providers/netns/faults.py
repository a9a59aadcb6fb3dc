"""Faults on purpose on netns nodes (`labctl fail` / `labctl repair`), every process by its pid.

bird: SIGTERM to the node's BIRD (its pid file, checked against its command line), which closes its
sessions with a BGP Cease, so the peers withdraw its routes at once. link: the node's LAN NIC down.
node: SIGSTOP to every process in the node's namespaces (sshd, BIRD, sessions): the kernel still
answers on the LAN, nothing on the node does, BGP peers drop it when their hold timer expires."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from labctl.errors import LabctlError
from labctl.host import birdrun, sh
from labctl.host.hostside import terminate
from labctl.live import nodes
from labctl.plan import names
from labctl.plan.model import LabModel, Node, Router
from labctl.progress import Progress


def _ns_pids(model: LabModel, node: Node | Router) -> list[int]:
    spaces = [names.netns("lc", model.name, node.name)] + [p.netns for p in node.pods]
    return [
        int(p)
        for ns in spaces
        if Path(f"/run/netns/{ns}").exists()
        for p in sh.run(["ip", "netns", "pids", ns], check=False).stdout.split()
    ]


def fail(prov, model: LabModel, node: Node | Router, kind: str) -> dict:
    name = node.name
    if kind == "bird":
        pid = birdrun.running(node.dir, node.bird_socket)
        if pid is None:
            raise LabctlError(f"BIRD is not running on {name}", f"`labctl repair {name} bird` starts it")
        terminate([pid], 10.0)
        return {"pid": pid}
    if kind == "link":
        sh.run(["ip", "-n", names.netns("lc", model.name, name), "link", "set", node.interface, "down"])
        return {"interface": node.interface}
    if kind == "node":
        pids = _ns_pids(model, node)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        return {"pids": pids}
    raise LabctlError(f"unknown fault {kind!r}")


def repair(prov, model: LabModel, node: Node | Router, kind: str, record: dict) -> None:
    if kind == "node":
        # the recorded pids and whatever else is there now (a stopped process started nothing since)
        for pid in dict.fromkeys(list(record.get("pids", [])) + _ns_pids(model, node)):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    elif kind == "link":
        # up again, then everything bootstrap sets on it (default route, permanent neighbours: a
        # link going down flushes them), as `up` would: idempotent for the other nodes
        sh.run(["ip", "-n", names.netns("lc", model.name, node.name), "link", "set", node.interface, "up"])
        prov.bootstrap(model, Progress(None, quiet=True))
    elif kind == "bird":
        if birdrun.running(node.dir, node.bird_socket) is None:
            _start_bird(prov, node)
    else:
        raise LabctlError(f"unknown fault {kind!r}")


def _start_bird(prov, node: Node | Router) -> None:
    """Start BIRD over the node's SSH as the bgp play does (in the node's namespaces), then wait up
    to 10 s for its sessions, so what `repair` returns to is a converged node."""
    nd, sock = node.dir, node.bird_socket
    start = birdrun.start_command(nd, sock)
    peers = "|".join(p.protocol for p in node.peers) or "none"
    wait = (
        f"for _ in $(seq 100); do [ $({prov.birdc(node)} show protocols | grep -cE '^({peers}) .*Established') "
        f"-ge {len(node.peers)} ] && exit 0; sleep 0.1; done; exit 0"
    )
    with nodes.NodeShell(prov.dir, node) as shell:
        rc, out, err = shell.run(start, timeout=20)
        if rc != 0:
            raise LabctlError(f"{node.name}: BIRD did not start: {(err or out).strip()}")
        shell.run(wait, timeout=20)
