"""BIRD of a speaker labctl runs on this host (a netns node, a lab router of netns or qemu): one command
line, one way to find it running, one start-or-reload script. Its files are in the speaker's dir:
bird.conf, bird.pid (and its control socket, the model's bird_socket)."""

from __future__ import annotations

import shlex
from pathlib import Path

from labctl.host.hostside import alive, cmdline, read_pid
from labctl.plan import layout


def argv(node_dir: str | Path, socket: str, bird: str = "bird") -> list[str]:
    nd = Path(node_dir)
    return [bird, "-c", str(nd / "bird.conf"), "-s", str(socket), "-P", str(nd / "bird.pid")]


def start_command(node_dir: str | Path, socket: str) -> str:
    """argv() as a shell command that returns once BIRD runs in the background. setsid: in a session
    of its own, or BIRD can get the SIGHUP of an SSH session's pty between its fork and its setsid()."""
    return f"setsid -w {shlex.join(argv(node_dir, socket))} </dev/null >/dev/null 2>&1"


def up_script(node_dir: str | Path, socket: str, rendered: Path) -> str:
    """The netns_bird role's bird-up.sh (start BIRD if it is not running, `birdc configure` when the
    `rendered` config differs from the one it runs), as a bash script run on this host."""
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    nd = Path(node_dir)
    head = f"conf={q(nd / 'bird.conf')} sock={q(socket)} pidfile={q(nd / 'bird.pid')}\n"
    head += f"new=$(cat {q(rendered)})\n"
    return head + (layout.shipped("playbooks") / "roles" / "netns_bird" / "files" / "bird-up.sh").read_text()


def running(node_dir: str | Path, socket: str) -> int | None:
    """The pid of the speaker's BIRD: a pid file outlives its process, so only a BIRD started on this
    speaker's socket counts (never found by program name: another lab's BIRD is a `bird` too)."""
    pid = read_pid(Path(node_dir) / "bird.pid")
    return pid if pid and alive(pid) and socket in cmdline(pid) else None
