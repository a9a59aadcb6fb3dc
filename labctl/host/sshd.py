"""sshd in a namespace of this host (a netns node; a lab router of netns or qemu), letting in root with
the lab key: its config, hosts file and start, all of a lab's at once by labctl/host/start.py."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from labctl.errors import HostError
from labctl.host import sh
from labctl.host.hostside import alive, read_pid
from labctl.plan.layout import LabDir
from labctl.plan.model import LabModel, Node, Router

SSHD = "/usr/sbin/sshd"


def namespace_sshd(lab, model: LabModel, hosts: list[Node | Router], netns_of) -> dict[str, int]:
    """sshd in each of these namespaces of this host (`netns_of(name)`), started as the nodes' are here and
    letting in root with the lab key: the qemu provider's lab routers are such namespaces too. Their pids."""
    authorized_keys(lab.dir)
    return await_sshd(lab.dir, start({h.name: sshd(lab.dir, model, h, netns_of(h.name)) for h in hosts}))


def authorized_keys(d: LabDir) -> None:
    d.authorized_keys.write_text(Path(str(d.ssh_key) + ".pub").read_text())  # every node's sshd reads it
    os.chmod(d.authorized_keys, 0o600)


def hosts_file(d: LabDir, model: LabModel, n: Node | Router) -> Path:
    """The node's /etc/hosts (a bind mount of this file): every node's name as the lab is now, on
    every up, so a node built before another was added or moved knows it. Written in place (same
    inode: the node's bind mount keeps seeing it) and only when it differs. Here rather than in a
    play: it is a file of the lab dir, and a play costs an SSH task per node."""
    hosts = d.node_dir(n.name) / "hosts"
    want = "127.0.0.1 localhost\n::1 localhost\n" + "".join(f"{x.address} {x.name}\n" for x in model.nodes)
    try:
        same = hosts.read_text() == want
    except OSError:
        same = False
    if not same:
        hosts.write_text(want)
    return hosts


def sshd(d: LabDir, model: LabModel, n: Node | Router, ns: str) -> int | dict:
    """The pid of the node's sshd if it runs, else the job that starts it (see start)."""
    nd = d.node_dir(n.name)
    hosts = hosts_file(d, model, n)
    pidfile = nd / "sshd.pid"
    pid = read_pid(pidfile)
    if pid and alive(pid):
        return pid
    pidfile.unlink(missing_ok=True)  # a dead sshd's: the new one writes its own
    cfg = nd / "sshd_config"
    home = d.node_home(n.name)
    home.mkdir(mode=0o700, exist_ok=True)
    cfg.write_text(_config(d, n, pidfile, home))
    # Like `ip netns exec`, the node gets its own /sys and its own /etc/hosts and resolv.conf
    # (names resolve locally, fast, and no DNS query leaves the lab); unlike it, /run/netns
    # stays shared with the host, so pod namespaces created on the node are the host's to see
    # and `labctl down`'s to remove. "/" (and the two files, if they are mount points) are made
    # slaves first, so the bind mounts can never propagate onto the host's files.
    resolv = nd / "resolv.conf"
    resolv.write_text("# labctl: no DNS inside the lab; names come from /etc/hosts\noptions timeout:1 attempts:1\n")
    # the UTS namespace gives the node its name; /etc/hostname is what tools read at start
    (nd / "hostname").write_text(f"{n.name}\n")
    return {
        "name": n.name,
        "netns": f"/run/netns/{ns}",
        "hostname": n.name,
        "binds": [
            ["/etc/hosts", str(hosts)],
            ["/etc/resolv.conf", str(resolv)],
            ["/etc/hostname", str(nd / "hostname")],
        ],
        "argv": [SSHD, "-f", str(cfg), "-E", str(nd / "sshd.log")],
    }


def _config(d: LabDir, n: Node | Router, pidfile: Path, home: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress {n.address}",
            "Port 22",
            f"HostKey {d.node_dir(n.name) / 'ssh_host_ed25519_key'}",
            f"PidFile {pidfile}",
            # root: the lab key; other users (vm-provider tests use a sudo user): their own
            f"AuthorizedKeysFile {d.authorized_keys} .ssh/authorized_keys",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # the lab dir may sit under a sticky /tmp, which StrictModes rejects;
            # authorized_keys is labctl's own 0600 file in a 0700 lab dir
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxSessions 100",
            "MaxStartups 100:30:200",
            "Subsystem sftp internal-sftp",
            # a node is a machine of its own: root there does not run the host's
            # ~/.bashrc, which bash sources on every SSH command (pyenv's init alone
            # costs 0.1 s per command, i.e. per ansible task and host)
            "Match User root",
            f"  SetEnv HOME={home}",
            "",
        ]
    )


def start(pids: dict[str, int | dict], more: list[dict] = ()) -> dict[str, int | None]:
    """Start the sshds that sshd() returned a job for, and `more` jobs (BIRD), all in one process
    (labctl/host/start.py); the sshds' pids are None until await_sshd reads their pid files."""
    jobs = [j for j in pids.values() if isinstance(j, dict)] + list(more)
    if jobs:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        starter = Path(__file__).with_name("start.py")
        sh.run([sys.executable, "-I", "-S", str(starter)], input=json.dumps(jobs), timeout=60 + len(jobs))
    return {k: None if isinstance(v, dict) else v for k, v in pids.items()}


def await_sshd(d: LabDir, pids: dict[str, int | None]) -> dict:
    """The sshd pids, waiting for those still starting (None). sshd writes its pid file once it listens: wait
    for all of them at once, not node by node."""
    deadline = time.monotonic() + 5.0
    for node, pid in pids.items():
        pidfile = d.node_dir(node) / "sshd.pid"
        while not pid and time.monotonic() < deadline:
            time.sleep(0.01)
            pid = read_pid(pidfile)
        if not pid:
            raise HostError(f"sshd of {node} did not start", f"see {pidfile.parent / 'sshd.log'}")
        pids[node] = pid
    return pids
