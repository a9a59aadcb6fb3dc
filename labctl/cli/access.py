"""Node access: exec and ssh."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from labctl.cli import NameOpt, command, find_lab, find_node, stoppable
from labctl.errors import UsageError


@command("exec")
def exec_(
    node: Annotated[str, typer.Argument(help="node name")],
    command: Annotated[list[str], typer.Argument(help="command to run on the node (after --)")],
    name: NameOpt = None,
) -> None:
    """Run a command on a node over SSH: its output as it comes, your stdin, its exit code; Ctrl-C ends it."""
    import shlex

    from labctl.live import nodes

    lab = find_lab(name, None)
    n = find_node(lab, node)
    with nodes.NodeShell(lab.dir, n) as s, stoppable("labctl: interrupted: the command on the node was ended"):
        rc = s.stream(
            " ".join(shlex.quote(c) for c in command), sys.stdin.fileno(), sys.stdout.buffer, sys.stderr.buffer
        )
    # a command killed by a signal exits 128+n, as in a shell (stream makes the remote shell say so)
    raise typer.Exit(rc if rc >= 0 else 1)


@command()
def ssh(node: Annotated[str, typer.Argument(help="node name")], name: NameOpt = None) -> None:
    """Open an interactive SSH session on a node (with the lab's key and pinned host keys)."""
    import os
    import shutil

    from labctl.live import access

    lab = find_lab(name, None)
    n = find_node(lab, node)
    acc = access.of_node(n)
    if shutil.which("ssh") is None:
        raise UsageError("ssh is not installed", "apt-get install openssh-client")
    acc.check_route(n.address)
    os.execvp("ssh", acc.ssh_argv(lab.dir.ssh_config, n.address, interactive=True))
