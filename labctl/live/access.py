"""How labctl reaches a node: one object, derived in one place, rendered for every path.

`for_node` derives a node's Access from the topology (defaults.ssh merged field by field with the
node's own ssh block) or, for providers that make a lab key, from that key. Everything that talks to
a node takes it from there: the inventory's host vars, the lab's ssh_config, the ssh argv of
`labctl ssh` and the SSH masters, paramiko's connect arguments (nodes.NodeShell, hostkeys).

The jump rule: a jump host written without a user (`jump: bastion`) is logged into as the node's
ssh user; the jump hop always authenticates with the node's key. OpenSSH is given the hop as a
ProxyCommand with those arguments, so it cannot fall back to the local user or another key.

Before any connection, `check_route` makes sure the host's route to the node goes out the lab's
own bridge (providers whose nodes live on a labctl-made bridge say which): a lab whose bridge is
gone must never make labctl send its packets out of the host's default route."""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from labctl.errors import LabctlError
from labctl.plan import names
from labctl.plan.model import as_node


class RouteError(LabctlError):
    """The route to a node does not go out the lab's bridge: nothing was sent."""


@dataclass(frozen=True)
class Jump:
    user: str
    host: str
    port: int
    key: str


@dataclass(frozen=True)
class Access:
    user: str
    port: int
    key: str
    jump: Jump | None = None
    become: bool = False  # not root: tasks and privileged reads go through sudo
    bridge: str | None = None  # the lab's host bridge every connection must leave through

    # -- derived once ----------------------------------------------------------------------

    @classmethod
    def of(cls, user: str, port: int, key: str, jump: str | None = None, bridge: str | None = None) -> Access:
        return cls(user, int(port), key, parse_jump(jump, user, key), user != "root", bridge)

    @classmethod
    def from_data(cls, d: dict | None) -> Access:
        """The node's `ssh` entry of topology-data.json (also an older lab's {user, port, key, jump})."""
        d = d or {}
        user, key = d.get("user", "root"), d.get("key", "~/.ssh/id_ed25519")
        jump = d.get("jump")
        if isinstance(jump, dict):
            jump = Jump(jump["user"], jump["host"], int(jump["port"]), jump["key"])
        else:
            jump = parse_jump(jump, user, key)
        return cls(user, int(d.get("port", 22)), key, jump, d.get("become", user != "root"), d.get("bridge"))

    def to_data(self) -> dict:
        return asdict(self)

    # -- rendered --------------------------------------------------------------------------

    def proxy_command(self, ssh_config: Path) -> str | None:
        """The jump hop for OpenSSH: its user, port and key spelled out (ProxyJump would take them
        from ssh_config's Host matching, where the local user and the first key win)."""
        j = self.jump
        if j is None:
            return None
        # ProxyCommand=none: the jump host may be a node too, whose Host block would proxy it again
        argv = ["ssh", "-F", str(ssh_config), "-o", "ProxyCommand=none", "-l", j.user, "-p", str(j.port)]
        argv += ["-i", j.key, "-W", "%h:%p", j.host]
        return " ".join(_sh(a) for a in argv)

    def ansible_vars(self, ssh_config: Path) -> dict:
        out = {
            "ansible_user": self.user,
            "ansible_port": self.port,
            "ansible_ssh_private_key_file": self.key,
            "ansible_become": self.become,
        }
        proxy = self.proxy_command(ssh_config)
        if proxy:
            # ansible splits this with shlex: one quoted -o argument
            out["ansible_ssh_common_args"] = shlex.join(["-o", f"ProxyCommand={proxy}"])
        return out

    def ssh_options(self, ssh_config: Path) -> list[tuple[str, str]]:
        """Options of the node's Host block in the lab's ssh_config."""
        out = [("User", self.user), ("Port", str(self.port)), ("IdentityFile", _cfg_quote(self.key))]
        proxy = self.proxy_command(ssh_config)
        if proxy:
            out.append(("ProxyCommand", proxy))
        return out

    def ssh_argv(self, ssh_config: Path, address: str, interactive: bool = False) -> list[str]:
        argv = ["ssh", "-F", str(ssh_config)]
        if interactive:
            argv += ["-o", "BatchMode=no"]
        argv += ["-l", self.user, "-p", str(self.port), "-i", self.key]
        proxy = self.proxy_command(ssh_config)
        if proxy:
            argv += ["-o", f"ProxyCommand={proxy}"]
        return [*argv, address]

    def connect_kwargs(self, address: str, timeout: float) -> dict:
        """paramiko.SSHClient.connect arguments for the node itself (sock: the jump channel)."""
        return _kwargs(address, self.port, self.user, self.key, timeout)

    def jump_kwargs(self, timeout: float) -> dict:
        j = self.jump
        assert j is not None
        return _kwargs(j.host, j.port, j.user, j.key, timeout)

    # -- the way out -----------------------------------------------------------------------

    def check_route(self, address: str, routes: dict[str, str | None] | None = None) -> None:
        """Raise RouteError unless the host's route to `address` goes out the lab's bridge.
        routes: route_devs() of many addresses at once, read beforehand."""
        if not self.bridge:
            return
        dev = (routes if routes is not None and address in routes else route_devs([address])).get(address)
        if dev == self.bridge:
            return
        exists = subprocess.run(["ip", "link", "show", "dev", self.bridge], capture_output=True).returncode == 0
        if not exists:
            raise RouteError(f"lab bridge {self.bridge} is gone: run labctl down / up")
        raise RouteError(
            f"the host's route to {address} goes via {dev or 'nowhere'}, not the lab bridge {self.bridge}: "
            "refusing to connect",
            "another route to the lab's LAN shadows it: remove it, or run labctl down / up",
        )


def route_devs(addresses: list[str]) -> dict[str, str | None]:
    """The device of the host's route to each address, from one `ip -batch` (None: no route)."""
    if len(addresses) == 1:
        r = subprocess.run(["ip", "-j", "route", "get", addresses[0]], capture_output=True, text=True)
    else:
        batch = "".join(f"route get {a}\n" for a in addresses)
        r = subprocess.run(["ip", "-j", "-batch", "-"], input=batch, capture_output=True, text=True)
    out: dict[str, str | None] = dict.fromkeys(addresses)
    dec, text, i = json.JSONDecoder(), r.stdout, 0
    while True:  # one JSON array per line answered; a line that fails answers nothing
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        try:
            rows, i = dec.raw_decode(text, i)
        except ValueError:
            break
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and row.get("dst") in out:
                out[row["dst"]] = row.get("dev")
    if len(addresses) > 1:
        # a line ip could not answer spoils the rest of a JSON batch: ask for those one by one
        for a in [a for a, dev in out.items() if dev is None]:
            out[a] = route_devs([a])[a]
    return out


def parse_jump(jump: str | None, user: str, key: str) -> Jump | None:
    """`[user@]host[:port]` -> Jump; without a user the hop logs in as the node's user, always
    with the node's key."""
    if not jump:
        return None
    juser, _, rest = jump.rpartition("@")
    host, _, port = rest.partition(":")
    return Jump(juser or user, host, int(port or 22), key)


def for_node(traits, ssh, lab_dir, lab_name: str, network: str | None = None) -> Access:
    """A node's access: the provider's lab key (its nodes trust nothing else), or the merged ssh
    block; `bridge` is the bridge of the node's network (or the lab's) if the provider makes bridges,
    checked before every connection."""
    bridge = names.lab_bridge(traits.links, lab_name, network)
    if traits.lab_key:
        return Access.of(traits.lab_user, 22, str(lab_dir.ssh_key), None, bridge)
    return Access.of(ssh.user, ssh.port, ssh.key, ssh.jump, bridge)


def for_router(lab_dir, bridge: str | None) -> Access:
    """A lab router's access: it is a namespace on this host with its own sshd (netns and qemu alike), which
    lets in root with the lab key, whatever the nodes' login (qemu: a sudo user in the VMs)."""
    return Access.of("root", 22, str(lab_dir.ssh_key), None, bridge)


def of_node(node) -> Access:
    """The access of a node of the lab model (or its dict form)."""
    return Access.from_data(as_node(node).ssh.to_data())


def _kwargs(host: str, port: int, user: str, key: str, timeout: float) -> dict:
    return {
        "hostname": host,
        "port": port,
        "username": user,
        "key_filename": str(Path(key).expanduser()),
        "timeout": timeout,
        "banner_timeout": timeout,
        "auth_timeout": timeout,
        "allow_agent": False,
        "look_for_keys": False,
    }


def _sh(word: str) -> str:
    # shlex.quote, but a plain ~/path stays readable (the shell's ~ expansion gives what ssh's would)
    return word if re.fullmatch(r"[\w@%+=:,./~-]+", word) else shlex.quote(word)


def _cfg_quote(value: str) -> str:
    """A value for ssh_config, which splits its arguments like a shell: quoted where needed."""
    if value and not any(c.isspace() or c in "\"'\\#" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_silenced = False


def paramiko():
    """paramiko, with its logger silenced: an unreachable node is one line of ours, never the
    traceback paramiko logs from its transport thread ("Error reading SSH protocol banner")."""
    global _silenced

    # paramiko imports invoke (a third of its import time, unittest.mock with it) only to run an
    # ssh_config's `Match exec`; labctl hands paramiko its arguments and never parses an ssh_config
    sys.modules.setdefault("invoke", None)
    import paramiko as p  # noqa: PLC0415 (heavy: imported where it is used)

    if not _silenced:
        log = logging.getLogger("paramiko")
        log.addHandler(logging.NullHandler())
        log.propagate = False
        log.setLevel(logging.CRITICAL + 1)
        _silenced = True
    return p
