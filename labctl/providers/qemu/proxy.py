"""The lab's package proxy: the distro's apt-cacher-ng, one per lab, listening on the host's address
on each lab LAN only (the gateway of a one-LAN lab; with `networks:`, the host's address on each
network's bridge). The VMs reach it as NAME, which each VM's /etc/hosts maps to the host's address on
its own LAN: never through a router. The VMs have no route off the lab (the host's ip_forward stays
0, no NAT): apt reaches the mirror through this proxy, and nothing else reaches anything. HTTPS
(pkgs.k8s.io, registries) needs CONNECT, which is refused, so such a fetch fails at once naming the host, unless the
topology sets qemu.internet (PassThroughPattern: used where the host has the internet).

Its config is labctl's own (no remapping, no admin socket shared with a system instance); the
package cache is shared by the labs of one $LABCTL_HOME, so a second lab downloads nothing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from labctl.errors import HostError
from labctl.host.hostside import cmdline, read_pid, terminate
from labctl.plan import layout

DAEMON = "/usr/sbin/apt-cacher-ng"
PORT = 3143  # not 3142: a system apt-cacher-ng (installed with the package) listens there on every address
NAME = "labctl-proxy"  # in each VM's /etc/hosts: the host's address on that VM's LAN


def url(host: str = NAME) -> str:
    return f"http://{host}:{PORT}"


def running(run_dir: Path) -> int | None:
    pid = read_pid(run_dir / "acng.pid")
    return pid if pid and str(run_dir) in cmdline(pid) else None


def start(run_dir: Path, addresses: list[str], internet: bool = False, timeout: float = 10.0) -> int:
    """apt-cacher-ng listening on `addresses` (the host's on each lab LAN); its pid."""
    pid = running(run_dir)
    if pid:
        return pid
    if not Path(DAEMON).exists():
        raise HostError(
            "apt-cacher-ng is not installed (the qemu provider's package proxy)", "apt-get install -y apt-cacher-ng"
        )
    cache = layout.home() / "cache" / "apt-cacher-ng"
    cache.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (run_dir / "acng.pid").unlink(missing_ok=True)
    conf = run_dir / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "acng.conf").write_text(
        "\n".join(
            [
                f"CacheDir: {cache}",
                f"LogDir: {run_dir}",
                "SupportDir: /usr/lib/apt-cacher-ng",
                f"BindAddress: {' '.join(addresses)}",
                f"Port: {PORT}",
                f"PidFile: {run_dir / 'acng.pid'}",
                f"SocketPath: {run_dir / 'acng.socket'}",
                "ForeGround: 0",
                "ExThreshold: 4",
                "VfilePatternEx: ^/InRelease$",
                # fail fast on an unreachable host (the lab has no internet but the mirror)
                "NetworkTimeout: 15",
                # qemu.internet: CONNECT to any host's 443 (pkgs.k8s.io, registries); else none at all
                *(["PassThroughPattern: .*"] if internet else []),
                "",
            ]
        )
    )
    p = subprocess.run(
        [DAEMON, "-c", str(conf)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if p.returncode != 0:
        raise HostError(f"apt-cacher-ng did not start: {(p.stderr or p.stdout).strip()[-300:]}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running(run_dir)
        if pid:
            try:
                for a in addresses:
                    socket.create_connection((a, PORT), timeout=1).close()
                return pid
            except OSError:
                pass
        time.sleep(0.05)
    raise HostError(
        f"apt-cacher-ng did not listen on {', '.join(addresses)} port {PORT}", f"see {run_dir}/apt-cacher.err"
    )


def stop(run_dir: Path) -> None:
    pid = running(run_dir)
    if pid and terminate([pid], 6.0):
        raise HostError(f"apt-cacher-ng (pid {pid}) did not stop")
    shutil.rmtree(run_dir, ignore_errors=True)
