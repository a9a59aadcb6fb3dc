"""Node access: exec and ssh."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from labctl.cli import NameOpt, command, find_lab, find_node
from labctl.errors import UsageError


@command("exec")
def exec_(
    node: Annotated[str, typer.Argument(help="node name")],
    command: Annotated[list[str], typer.Argument(help="command to run on the node (after --)")],
    name: NameOpt = None,
) -> None:
    """Run a command on a node over SSH; its output and exit code are the command's."""
    import shlex

    from labctl import nodes

    lab = find_lab(name, None)
    n = find_node(lab, node)
    with nodes.NodeShell(lab.dir, n) as s:
        rc, out, err = s.run(" ".join(shlex.quote(c) for c in command), timeout=600)
    sys.stdout.write(out)
    sys.stderr.write(err)
    raise typer.Exit(rc)


@command()
def ssh(node: Annotated[str, typer.Argument(help="node name")], name: NameOpt = None) -> None:
    """Open an interactive SSH session on a node (with the lab's key and pinned host keys)."""
    import os
    import shutil

    lab = find_lab(name, None)
    n = find_node(lab, node)
    ssh_cfg = n.get("ssh") or {}
    argv = ["ssh", "-F", str(lab.dir.ssh_config), "-o", "BatchMode=no", "-p", str(ssh_cfg.get("port", 22))]
    if lab.dir.ssh_key.exists():
        argv += ["-i", str(lab.dir.ssh_key)]
    elif ssh_cfg.get("key"):
        argv += ["-i", os.path.expanduser(ssh_cfg["key"])]
    if ssh_cfg.get("jump"):
        argv += ["-J", ssh_cfg["jump"]]
    argv.append(f"{ssh_cfg.get('user', 'root')}@{n['address']}")
    if shutil.which("ssh") is None:
        raise UsageError("ssh is not installed", "apt-get install openssh-client")
    os.execvp("ssh", argv)
