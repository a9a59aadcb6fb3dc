"""Start each node's sshd in its namespaces: run by labctl/host/sshd.py as `python -I -S THIS_FILE`
with a JSON list of jobs on stdin, one process for every node of the lab. A job without a hostname
(BIRD) only joins the node's network namespace.

Per node (a forked child): join the node's network namespace, take a UTS and a mount namespace of
its own, mount a sysfs of the node's network namespace, make "/" (and /etc/hosts, resolv.conf and
hostname where they are mount points) slaves so nothing propagates back onto the host's files, bind
the node's files over them, set the hostname, exec sshd. The same steps as `nsenter --net ... unshare
--uts --mount --propagation unchanged sh -c 'mount ...; hostname ...; exec sshd'`, in syscalls: that
chain was about 14 programs started per node, most of a big lab's bootstrap. /run/netns keeps its
propagation (shared with the host), so pod namespaces a node creates are the host's to see and
`labctl down`'s to remove. Standard library only: -I -S keeps the interpreter's start short."""

import ctypes
import errno
import json
import os
import socket
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWNET = 0x00020000, 0x04000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE, MS_SLAVE = 0x1000, 0x4000, 0x40000, 0x80000
IN_FLIGHT = 32  # children starting at once: enough to overlap sshd's start-ups on any core count

libc = ctypes.CDLL(None, use_errno=True)


def _call(rc: int, what: str, ok_errno: int = 0) -> int:
    err = ctypes.get_errno() if rc != 0 else 0
    if err and err != ok_errno:
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return err


def _mount(src, target, fstype, flags, what, ok_errno=0) -> int:
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    return _call(libc.mount(enc(src), enc(target), enc(fstype), flags, None), what, ok_errno)


def _child(job: dict) -> None:
    fd = os.open(job["netns"], os.O_RDONLY)
    _call(libc.setns(fd, CLONE_NEWNET), "setns " + job["netns"])
    os.close(fd)
    if "hostname" not in job:  # BIRD: the node's network is all it needs
        os.execv(job["argv"][0], job["argv"])
    _call(libc.unshare(CLONE_NEWUTS | CLONE_NEWNS), "unshare")
    _mount("none", "/sys", None, MS_REC | MS_PRIVATE, "make /sys private")
    _mount("sysfs", "/sys", "sysfs", 0, "mount sysfs")
    _mount("none", "/", None, MS_SLAVE, "make / a slave")
    for target, src in job["binds"]:
        # EINVAL: not a mount point (the usual case), nothing of the host's to protect there
        _mount("none", target, None, MS_SLAVE, f"make {target} a slave", ok_errno=errno.EINVAL)
        _mount(src, target, None, MS_BIND, f"bind {src} on {target}")
    socket.sethostname(job["hostname"])
    os.execv(job["argv"][0], job["argv"])


def main() -> int:
    jobs = json.load(sys.stdin)
    running: dict[int, str] = {}
    failed: list[str] = []

    def reap_one() -> None:
        pid, status = os.wait()
        name = running.pop(pid)
        # sshd (BIRD) forks into the background once it listens: its first process exits 0
        if os.waitstatus_to_exitcode(status) != 0:
            failed.append(f"{name}: exit {os.waitstatus_to_exitcode(status)}")

    for job in jobs:
        while len(running) >= IN_FLIGHT:
            reap_one()
        pid = os.fork()
        if pid == 0:
            try:
                _child(job)
            except BaseException as e:  # noqa: BLE001 - the child reports and ends, whatever it was
                print(f"{job['name']}: {e}", file=sys.stderr, flush=True)
            os._exit(1)
        running[pid] = f"{job['name']} {os.path.basename(job['argv'][0])}"
    while running:
        reap_one()
    if failed:
        print(f"did not start on {len(failed)} node(s): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
