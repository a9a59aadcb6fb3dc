"""What a netns lab has on this host, read from the host alone: its namespaces (nodes and pods), the
processes in them and those running from its lab dir. The names on the host come from the lab name
alone: they never tell whose lab it is, so the processes' command lines (their node dirs) decide."""

from __future__ import annotations

import os
import re
from pathlib import Path

from labctl.host import sh
from labctl.host.hostside import cmdline, terminate
from labctl.plan import layout
from labctl.plan.layout import LabDir
from labctl.providers.base import LeftNode, LeftPod, Remains
from labctl.spec import schema


def lab_spaces(lab: str) -> list[str]:
    try:
        # a real namespace is an nsfs mount; a plain file of that name is not a lab's (nor ours to clean)
        return sorted(
            p.name for p in Path("/run/netns").iterdir() if p.name.startswith(f"lc-{lab}.") and os.path.ismount(p)
        )
    except OSError:
        return []


def other_home(lab_dir: LabDir) -> str | None:
    """The lab dir of another labctl home whose lab of this name runs on this host (the processes in
    the lab's namespaces run from there: sshd and BIRD name their node dir), else None."""
    name = lab_dir.root.name
    node_dir = re.compile(rf"(/[^\s]*/{re.escape(name)})/nodes/")
    for pid in pids_in(lab_spaces(name)):
        m = node_dir.search(cmdline(pid))
        if m and m[1] != str(lab_dir.root):
            return m[1]
    return None


def running_from(lab_dir: LabDir) -> list[int]:
    """The processes of this host that run from the lab dir's node dirs (sshd, BIRD; in their node's
    namespace or, if it was deleted by hand, in none left): the lab's own, by pid."""
    return naming(lab_dir.root / "nodes")


def left_on_host(lab_dir: LabDir, sure: bool = False) -> Remains | None:
    """The namespaces (nodes and pods) of a lab named like this lab dir, as teardown's Remains, when
    the dir itself is gone; None if there are none, or if their processes name the same lab of another
    labctl home (whose lab it is). sure: only if a process names this lab dir (namespaces with no
    process left could be another home's lab being built)."""
    name = lab_dir.root.name
    spaces = lab_spaces(name)
    if not spaces:
        return None
    mine, seen = f"{lab_dir.root}/", False
    for ns in spaces:
        for pid in sh.run(["ip", "netns", "pids", ns], check=False).stdout.split():
            cmd = cmdline(int(pid))
            if f"/{name}/nodes/" in cmd and mine not in cmd:
                return None
            seen = seen or mine in cmd
    if sure and not seen:
        return None
    return Remains(name, "netns", host_nodes(name, spaces))


def host_nodes(name: str, spaces: list[str] | None = None) -> list[LeftNode]:
    """The lab's nodes (and routers) as its namespaces on this host show them, with their pods'."""
    nodes: dict[str, LeftNode] = {}
    for ns in lab_spaces(name) if spaces is None else spaces:
        node, _, pod = ns[len(f"lc-{name}.") :].partition(".")
        nodes.setdefault(node, LeftNode(node))
        if pod:
            nodes[node].pods.append(LeftPod(ns))
    return list(nodes.values())


def orphans() -> list[str]:
    """Labs of this labctl home that left namespaces and processes but have no directory."""
    try:
        labs = {
            p.name[3:].split(".")[0]
            for p in Path("/run/netns").iterdir()
            if p.name.startswith("lc-") and os.path.ismount(p)
        }
    except OSError:
        return []
    out = []
    for name in sorted(labs):
        d = layout.lab_dir(name)
        if schema.LAB_NAME.fullmatch(name) and not d.is_lab() and left_on_host(d, sure=True) is not None:
            out.append(name)
    return out


def naming(parent: Path) -> list[int]:
    """The processes whose command line names a path in this directory: an ssh master's names its
    ControlPath ("ssh: <lab>/ssh/cp/<hash> [mux]"), a node's sshd and BIRD their node dir."""
    mark = f"{parent}/"
    me = {os.getpid(), os.getppid()}
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in me and mark in cmdline(int(p))]


def kill_naming(parent: Path) -> None:
    """Stop (by pid) the processes whose command line names a path in this directory."""
    terminate(naming(parent))


def netns_id(path: Path) -> tuple[int, int] | None:
    """A network namespace's identity: the inode of its /run/netns mount or of /proc/PID/ns/net."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in(spaces: list[str]) -> list[int]:
    """The processes in these namespaces, as `ip netns pids` finds them (the namespace inode of
    /proc/PID/ns/net against the /run/netns mount's), in one pass over /proc for all of them."""
    return pids_in_ids({i for ns in spaces if (i := netns_id(Path(f"/run/netns/{ns}"))) is not None})


def pids_in_ids(want: set[tuple[int, int]]) -> list[int]:
    if not want:
        return []
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and netns_id(Path(f"/proc/{p}/ns/net")) in want]


def kill_in(spaces: list[str]) -> None:
    """Stop every process in these namespaces (by pid) while all of them still exist, so the TCP
    sessions between nodes (BGP) close in both kernels rather than towards a peer already gone."""
    spaces = [ns for ns in spaces if Path(f"/run/netns/{ns}").exists()]
    pids = pids_in(spaces)
    terminate(pids, 2.0 + 0.02 * len(pids), again=lambda: pids_in(spaces))
