"""The lab's resolver: the distro's dnsmasq (dnsmasq-base), one per lab, listening on the host's address
on each lab LAN only (like the package proxy, proxy.py). Each VM's resolv.conf points at the host's
address on its own LAN (see machine.config_disk). CoreDNS forwards what is not a cluster name to the
node's resolv.conf and exits when it lists no nameserver; this gives it one.

It answers the lab's node names and the proxy's name (the host's address on the LAN the query came
in on); everything else is forwarded to the host's resolvers only with `qemu.internet: true`, else
it is answered REFUSED here and nothing leaves the host. No DHCP (no dhcp-range), no system service:
started and ended by its pid like the proxy, owned by the lab."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from labctl.errors import HostError
from labctl.host.hostside import cmdline, read_pid, terminate

DAEMON = "dnsmasq"  # /usr/sbin/dnsmasq from dnsmasq-base
PORT = 53


def config(run_dir: Path, addresses: list[str], bridges: list[str], names: dict[str, str], internet: bool,
           proxy_name: str) -> str:  # fmt: skip
    """dnsmasq's config. `addresses`: the host's on each lab LAN; `bridges`: those LANs' bridges;
    `names`: node name -> address."""
    lines = [
        f"pid-file={run_dir / 'dnsmasq.pid'}",
        f"log-facility={run_dir / 'dnsmasq.log'}",
        "log-queries",
        *[f"listen-address={a}" for a in addresses],
        "bind-interfaces",  # only those addresses: never the host's own resolver port on other addresses
        f"port={PORT}",
        "user=nobody",
        "group=nogroup",
        "no-hosts",  # the host's /etc/hosts is not the lab's
        "domain-needed",  # a bare name that is no lab name is never sent upstream
        "bogus-priv",  # nor reverse lookups of private addresses
        *[f"host-record={n},{a}" for n, a in sorted(names.items())],
        # the proxy is the host's address on the LAN the query came in on
        *[f"interface-name={proxy_name},{b}/4" for b in bridges],
        "localise-queries",
        # qemu.internet: the host's resolvers; else no upstream at all (REFUSED, nothing leaves the host)
        *(["resolv-file=/etc/resolv.conf"] if internet else ["no-resolv"]),
        "",
    ]
    return "\n".join(lines)


def running(run_dir: Path) -> int | None:
    pid = read_pid(run_dir / "dnsmasq.pid")
    return pid if pid and str(run_dir) in cmdline(pid) else None


def start(run_dir: Path, addresses: list[str], bridges: list[str], names: dict[str, str], internet: bool,
          proxy_name: str, timeout: float = 10.0) -> int:  # fmt: skip
    """dnsmasq listening on `addresses` port 53; its pid. A running one is restarted when its
    config changed (nodes added or removed)."""
    conf = run_dir / "dnsmasq.conf"
    want = config(run_dir, addresses, bridges, names, internet, proxy_name)
    pid = running(run_dir)
    if pid and conf.exists() and conf.read_text() == want:
        return pid
    if pid:
        stop(run_dir, keep_dir=True)
    exe = shutil.which(DAEMON)
    if exe is None:
        raise HostError("dnsmasq is not installed (the qemu lab's resolver)", "apt-get install -y dnsmasq-base")
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (run_dir / "dnsmasq.pid").unlink(missing_ok=True)
    conf.write_text(want)
    p = subprocess.run(
        [exe, f"--conf-file={conf}"], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if p.returncode != 0:
        raise HostError(f"dnsmasq did not start: {(p.stderr or p.stdout).strip()[-300:]}", f"see {run_dir}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running(run_dir)
        if pid:
            try:
                for a in addresses:  # its TCP socket says it listens (UDP cannot)
                    socket.create_connection((a, PORT), timeout=1).close()
                return pid
            except OSError:
                pass
        time.sleep(0.05)
    raise HostError(f"dnsmasq did not listen on {', '.join(addresses)} port {PORT}", f"see {run_dir}/dnsmasq.log")


def stop(run_dir: Path, keep_dir: bool = False) -> None:
    pid = running(run_dir)
    if pid and terminate([pid], 6.0):
        raise HostError(f"dnsmasq (pid {pid}) did not stop")
    if not keep_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
