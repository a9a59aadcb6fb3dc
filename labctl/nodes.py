"""Talking to live nodes over SSH (paramiko) and reading their network state.

Both providers are read the same way: one SSH session per node runs a probe script whose
sections are parsed here. Host keys must match the lab's known_hosts."""

from __future__ import annotations

import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from labctl.errors import LabctlError

SECTION = "=====labctl:"


@dataclass
class Session:
    """Peer name, state and info of one BGP protocol as BIRD shows it."""

    name: str
    state: str
    info: str
    since: str = ""

    @property
    def established(self) -> bool:
        return self.info.startswith("Established")


@dataclass
class NodeFacts:
    name: str
    address: str
    reachable: bool = False
    error: str = ""
    hostname: str = ""
    interface: str = ""
    physical_ip: str = ""
    tunnel_device: str = ""
    tunnel_ip: str = ""
    block: str = ""
    labels: dict = field(default_factory=dict)
    sessions: list[Session] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    bird_running: bool = False
    extra: dict[str, str] = field(default_factory=dict)  # outputs of the caller's extra commands
    k8s: dict = field(default_factory=dict)  # vm control plane: nodes, pods, daemonsets from the API


class NodeShell:
    """One SSH connection to a node, through its jump host if it has one."""

    def __init__(self, lab_dir, node: dict, timeout: float = 3.0):
        import paramiko  # heavy; only commands that reach nodes import it

        self.node = node
        ssh = node.get("ssh") or {}
        key = str(lab_dir.ssh_key) if lab_dir.ssh_key.exists() else str(Path(ssh.get("key", "")).expanduser())
        self.jump = None
        try:
            sock = None
            if ssh.get("jump"):
                from labctl.hostkeys import _parse_jump

                user, host, port = _parse_jump(ssh["jump"], ssh.get("user", "root"))
                self.jump = self._client(paramiko, lab_dir, host, port, user, key, timeout, None)
                sock = self.jump.get_transport().open_channel(
                    "direct-tcpip", (node["address"], int(ssh.get("port", 22))), ("127.0.0.1", 0), timeout=timeout
                )
            self.client = self._client(
                paramiko,
                lab_dir,
                node["address"],
                int(ssh.get("port", 22)),
                ssh.get("user", "root"),
                key,
                timeout,
                sock,
            )
        except Exception as e:  # paramiko raises many types; all mean "unreachable"
            if self.jump is not None:
                self.jump.close()
            raise LabctlError(f"ssh {node['name']} ({node['address']}): {e.__class__.__name__}: {e}") from None

    @staticmethod
    def _client(paramiko, lab_dir, host, port, user, key, timeout, sock):
        c = paramiko.SSHClient()
        c.load_host_keys(str(lab_dir.known_hosts))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())  # keys are pinned by up, never here
        c.connect(
            host,
            port=port,
            username=user,
            key_filename=key,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
            sock=sock,
        )
        return c

    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
        _, out, err = self.client.exec_command(command, timeout=timeout)
        o = out.read().decode(errors="replace")
        e = err.read().decode(errors="replace")
        return out.channel.recv_exit_status(), o, e

    def close(self) -> None:
        self.client.close()
        if self.jump is not None:
            self.jump.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf"


def sudo(node: dict) -> str:
    return "" if (node.get("ssh") or {}).get("user", "root") == "root" else "sudo -n "


def probe_script(node: dict, extra: dict[str, str] | None = None, provider: str = "netns") -> str:
    parts = {"hostname": "hostname", "addr": "ip -j -4 addr show", "route": "ip -j -4 route show"}
    if provider in ("vm", "qemu"):
        # BIRD runs inside calico-node; its socket is Calico's, its table the same as in netns labs
        s = sudo(node)
        parts["bird"] = (
            f"{s}crictl exec $({s}crictl ps -q --name calico-node | head -n1) "
            "birdcl -s /var/run/calico/bird.ctl show protocols 2>&1"
        )
        if node["role"] == "control-plane":
            parts["k8s"] = f"{s}{KUBECTL} get nodes,pods,daemonsets -A -o json 2>/dev/null || echo '{{}}'"
    else:
        sock = shlex.quote(node.get("bird_socket", "/var/run/calico/bird.ctl"))
        labels = shlex.quote(f"{node['dir']}/labels.json") if node.get("dir") else "/dev/null"
        parts["bird"] = f"birdc -s {sock} show protocols 2>&1"
        parts["labels"] = f"cat {labels} 2>/dev/null || echo '{{}}'"
    parts |= {f"extra:{k}": f'{cmd}; echo "rc=$?"' for k, cmd in (extra or {}).items()}
    return "; ".join(f"echo '{SECTION}{k}'; {cmd}" for k, cmd in parts.items())


def parse_probe(facts: NodeFacts, out: str) -> NodeFacts:
    sections: dict[str, str] = {}
    key = None
    for line in out.splitlines():
        if line.startswith(SECTION):
            key = line[len(SECTION) :]
            sections[key] = ""
        elif key:
            sections[key] += line + "\n"
    facts.hostname = sections.get("hostname", "").strip()
    try:
        addrs = json.loads(sections.get("addr") or "[]")
    except ValueError:
        addrs = []
    for link in addrs:
        for a in link.get("addr_info", []):
            if a.get("local") == facts.address:
                facts.interface, facts.physical_ip = link["ifname"], f"{a['local']}/{a['prefixlen']}"
            if link.get("ifname") in ("tunl0", "vxlan.calico") and a.get("prefixlen") == 32:
                facts.tunnel_device, facts.tunnel_ip = link["ifname"], a["local"]
    try:
        facts.routes = json.loads(sections.get("route") or "[]")
    except ValueError:
        facts.routes = []
    # Calico blackholes the node's own block (and BIRD announces it)
    for r in facts.routes:
        if r.get("type") == "blackhole" and r.get("protocol") == "bird":
            facts.block = r["dst"]
    bird = sections.get("bird", "")
    facts.bird_running = "BIRD" in bird and "ready" in bird
    facts.sessions = parse_protocols(bird)
    try:
        facts.labels = json.loads(sections.get("labels") or "{}")
    except ValueError:
        facts.labels = {}
    facts.extra = {k[len("extra:") :]: v for k, v in sections.items() if k.startswith("extra:")}
    try:
        facts.k8s = json.loads(sections.get("k8s") or "{}")
    except ValueError:
        facts.k8s = {}
    return facts


# A protocol row of `birdc show protocols [all]`: name, proto, table, state, since (a time, or a
# date and a time), info
PROTO_ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d\S*(?: \d\S*)?)\s*(.*?)\s*$")


def parse_protocols(text: str) -> list[Session]:
    """Rows of `birdc show protocols` whose protocol is BGP."""
    rows = (PROTO_ROW.match(line) for line in text.splitlines())
    return [Session(m[1], m[4], m[6], m[5]) for m in rows if m and m[2] == "BGP"]


def gather(
    lab_dir, nodes: list[dict], extra: dict[str, dict[str, str]] | None = None, provider: str = "netns"
) -> list[NodeFacts]:
    """Probe every node in parallel, one SSH session each; `extra` adds commands per node
    (name -> {key: command}) whose output and exit code land in NodeFacts.extra.
    Unreachable nodes come back with reachable=False."""

    def one(node: dict) -> NodeFacts:
        f = NodeFacts(node["name"], node["address"])
        try:
            with NodeShell(lab_dir, node) as s:
                rc, out, err = s.run(probe_script(node, (extra or {}).get(node["name"]), provider))
        except LabctlError as e:
            f.error = str(e)
            return f
        f.reachable = True
        return parse_probe(f, out)

    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as ex:
        return list(ex.map(one, nodes))
