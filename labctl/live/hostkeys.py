"""Host-key pinning for vm labs, checked by labctl before ansible runs, so that a jump host's key
problem is reported as clearly as a node's (OpenSSH hides the jump hop's error).

Unknown key: refused unless accept_new, then pinned in the lab's known_hosts. Changed key:
always refused."""

from __future__ import annotations

import base64
import hashlib
import socket
from pathlib import Path

from labctl.errors import HostError
from labctl.live import access


def _entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _Pinner:
    def __init__(self, known_hosts: Path, accept_new: bool):
        self.paramiko = access.paramiko()
        self.path = known_hosts
        self.keys = self.paramiko.HostKeys()
        if known_hosts.exists():
            self.keys.load(str(known_hosts))
        self.accept_new = accept_new
        self.added: list[str] = []
        self.problems: list[str] = []

    def check(self, label: str, entry: str, key) -> bool:
        known = self.keys.lookup(entry)
        if known is not None and key.get_name() in known:
            if known[key.get_name()] == key:
                return True
            self.problems.append(
                f"{label}: host key CHANGED since it was pinned (reinstalled machine, or an attack); "
                f"if you trust the new key, remove the line for {entry} from {self.path}"
            )
            return False
        if not self.accept_new:
            self.problems.append(
                f"{label}: host key {key.get_name()} SHA256:{_fingerprint(key)} is not in the lab's known_hosts; "
                "check it, then run `labctl up --accept-new-host-keys`"
            )
            return False
        self.keys.add(entry, key.get_name(), key)
        self.added.append(entry)
        return True

    def server_key(self, sock):
        t = self.paramiko.Transport(sock)
        t.start_client(timeout=10)
        return t, t.get_remote_server_key()


def _fingerprint(key) -> str:

    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def pin(nodes: list[dict], known_hosts: Path, accept_new: bool) -> list[str]:
    """Check (and with accept_new, pin) the keys of every node and jump host; raise HostError
    naming each problem. Returns the entries that were added."""
    p = _Pinner(known_hosts, accept_new)
    jumps: dict[tuple, object] = {}  # (user, host, port, key) -> authenticated transport
    try:
        for n in nodes:
            acc = access.of_node(n)
            port = acc.port
            try:
                acc.check_route(n["address"])
                if acc.jump is not None:
                    j = acc.jump
                    acc.check_route(j.host)
                    jid = (j.user, j.host, j.port, j.key)
                    if jid not in jumps:
                        t, key = p.server_key(socket.create_connection((j.host, j.port), timeout=10))
                        if not p.check(f"jump host {j.host}", _entry(j.host, j.port), key):
                            t.close()
                            continue
                        t.auth_publickey(j.user, p.paramiko.PKey.from_path(str(Path(j.key).expanduser())))
                        jumps[jid] = t
                    sock = jumps[jid].open_channel("direct-tcpip", (n["address"], port), ("127.0.0.1", 0), timeout=10)
                else:
                    sock = socket.create_connection((n["address"], port), timeout=10)
                t, key = p.server_key(sock)
                t.close()
                p.check(n["name"], _entry(n["address"], port), key)
            except access.RouteError:
                raise
            except (OSError, p.paramiko.SSHException) as e:
                p.problems.append(f"{n['name']}: cannot reach {n['address']}:{port} over SSH: {e}")
    finally:
        for t in jumps.values():
            t.close()
    if p.added:
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        p.keys.save(str(known_hosts))
        known_hosts.chmod(0o600)
    if p.problems:
        raise HostError("; ".join(p.problems))
    return p.added
