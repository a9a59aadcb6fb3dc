"""A node's network namespace entered from this host: commands that must not depend on the node's
own link (its SSH), such as removing a `labctl impair --loss` from it.

The netns provider's nodes and lab routers, and the qemu provider's lab routers, are namespaces of
this host: `nsenter --net` runs a command in them as root, with no packet on the lab's LAN. It has
NodeShell's run() so the same code drives either."""

from __future__ import annotations

import subprocess
from pathlib import Path

from labctl.errors import LabctlError


class NsShell:
    def __init__(self, netns: str, node):
        self.netns, self.node = netns, node
        self.path = Path("/run/netns") / netns
        if not self.path.exists():
            raise LabctlError(f"{node.name}: its namespace {netns} is gone", "run `labctl up` to rebuild it")

    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
        argv = ["nsenter", f"--net={self.path}", "sh", "-c", command]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabctlError(f"{self.node.name}: {command}: no answer within {timeout:g} s") from None
        return p.returncode, p.stdout, p.stderr

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
