"""SSH masters opened ahead of ansible. ansible-playbook spends ~0.7 s importing itself before
its first task, time in which every node's SSH handshake can already be done: its first task then
finds the master (same ssh_config, same ControlPath: %C hashes host, port and user only) and just
opens a session on it. A failed open costs nothing: ansible connects itself and reports why."""

from __future__ import annotations

import subprocess

from labctl.live import access
from labctl.plan.layout import LabDir
from labctl.plan.model import LabModel


def targets(model: LabModel, lab: LabDir) -> list[list[str]]:
    """ssh arguments per node, as the inventory has ansible connect (labctl/live/access.py renders both)."""
    out = []
    routes = access.route_devs([n.address for n in model.nodes])  # one `ip` for all, not one per node
    for n in model.nodes:
        acc = access.of_node(n)
        acc.check_route(n.address, routes)
        out.append(acc.ssh_argv(lab.ssh_config, n.address)[1:])
    return out


def open_masters(model: LabModel, lab: LabDir) -> list[subprocess.Popen]:
    """Start opening every node's master; returns at once. Hand the result to `reap`."""
    lab.control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return [
        subprocess.Popen(
            # a command, not -fN: with a master already there (or one ansible opened first) this is a
            # plain session that ends, where -fN would stay in the background as a client
            ["ssh", "-o", "ConnectTimeout=10", *args, "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C is labctl's to handle, not theirs
        )
        for args in targets(model, lab)
    ]


def reap(procs: list[subprocess.Popen]) -> None:
    """The openers are long done by the end of a playbook; one still hanging is killed (the
    master it may have forked lives on under ControlPersist, closed by `down` like ansible's)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def close_masters(lab: LabDir) -> None:
    """Ask every master with a socket in the lab's ControlPath directory (ansible's and the openers') to
    exit. One that does not answer within 5 s is left to the caller (netns kills by the path it names)."""
    if not lab.control_dir.is_dir():
        return
    for sock in lab.control_dir.iterdir():
        argv = ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "labctl-node"]
        try:
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=5)
        except subprocess.TimeoutExpired:
            continue
