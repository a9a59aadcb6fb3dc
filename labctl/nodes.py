"""Talking to live nodes over SSH (paramiko) and reading their network state.

Both providers are read the same way: one SSH session per node runs a probe script whose
sections are parsed here. Host keys must match the lab's known_hosts."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from labctl import access
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
    """One SSH connection to a node, through its jump host if it has one (access.Access says how);
    nothing is sent unless the host's route to the node leaves through the lab's bridge."""

    def __init__(self, lab_dir, node: dict, timeout: float = 3.0):
        paramiko = access.paramiko()  # heavy; only commands that reach nodes import it
        self.node = node
        acc = access.of_node(node)
        acc.check_route(node["address"])
        if acc.jump is not None:
            acc.check_route(acc.jump.host)
        self.jump = None
        try:
            sock = None
            if acc.jump is not None:
                self.jump = self._client(paramiko, lab_dir, acc.jump_kwargs(timeout))
                sock = self.jump.get_transport().open_channel(
                    "direct-tcpip", (node["address"], acc.port), ("127.0.0.1", 0), timeout=timeout
                )
            self.client = self._client(paramiko, lab_dir, acc.connect_kwargs(node["address"], timeout) | {"sock": sock})
        except Exception as e:  # paramiko raises many types; all mean "unreachable"
            if self.jump is not None:
                self.jump.close()
            raise LabctlError(f"ssh {node['name']} ({node['address']}): {e.__class__.__name__}: {e}") from None

    @staticmethod
    def _client(paramiko, lab_dir, kwargs: dict):
        c = paramiko.SSHClient()
        c.load_host_keys(str(lab_dir.known_hosts))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())  # keys are pinned by up, never here
        c.connect(**kwargs)
        return c

    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
        _, out, err = self.client.exec_command(command, timeout=timeout)
        o = out.read().decode(errors="replace")
        e = err.read().decode(errors="replace")
        return out.channel.recv_exit_status(), o, e

    def stream(self, command: str, stdin: int | None, stdout, stderr) -> int:
        """Run `command`, writing its stdout/stderr to these binary files as it comes and feeding
        it fd `stdin` (EOF included); no timeout while it runs. Ctrl-C (KeyboardInterrupt) kills
        the remote command's process group, then propagates. Returns the exit code."""
        import select
        import threading

        chan = self.client.get_transport().open_session()
        chan.settimeout(None)
        # the first stdout line is the remote shell's pid: sshd makes it a process group leader
        # (setsid), so a Ctrl-C can end the command with everything it started
        chan.exec_command(f"echo $$; {command}")
        pid, head = None, b""

        def feed() -> None:
            try:
                while True:
                    data = os.read(stdin, 32768) if stdin is not None else b""
                    if not data:
                        break
                    chan.sendall(data)
                chan.shutdown_write()
            except Exception:  # the command ended first and closed the channel: nothing to feed
                pass

        threading.Thread(target=feed, daemon=True).start()
        try:
            while True:
                select.select([chan], [], [], 1.0)
                while chan.recv_ready():
                    data = chan.recv(32768)
                    if pid is None:
                        head += data
                        if b"\n" not in head:
                            continue
                        first, _, data = head.partition(b"\n")
                        pid = first.strip().decode(errors="replace")
                    stdout.write(data)
                    stdout.flush()
                while chan.recv_stderr_ready():
                    stderr.write(chan.recv_stderr(32768))
                    stderr.flush()
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    if pid is None and head:
                        stdout.write(head)
                    return chan.recv_exit_status()
        except KeyboardInterrupt:
            if pid and pid.isdigit():
                with contextlib.suppress(Exception):
                    k = self.client.get_transport().open_session(timeout=3)
                    k.exec_command(f"kill -TERM -- -{pid} 2>/dev/null || kill -TERM {pid}")
                    k.recv_exit_status()
            chan.close()
            raise

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
    return "sudo -n " if access.of_node(node).become else ""


def probe_script(node: dict, extra: dict[str, str] | None = None, provider: str = "netns") -> str:
    from labctl import providers

    prov = providers.get(provider)
    parts = {"hostname": "hostname", "addr": "ip -j -4 addr show", "route": "ip -j -4 route show"}
    # the provider knows its way to BIRD (a lab-dir socket, or birdcl inside calico-node)
    parts["bird"] = f"{prov.birdc(node)} show protocols 2>&1"
    if prov.labels_in_kubernetes:
        if node["role"] == "control-plane":
            parts["k8s"] = f"{sudo(node)}{KUBECTL} get nodes,pods,daemonsets -A -o json 2>/dev/null || echo '{{}}'"
    else:
        labels = shlex.quote(f"{node['dir']}/labels.json") if node.get("dir") else "/dev/null"
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
        except access.RouteError:
            raise  # the lab's bridge is gone: the command stops, for every node at once
        except LabctlError as e:
            f.error = str(e)
            return f
        f.reachable = True
        return parse_probe(f, out)

    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as ex:
        return list(ex.map(one, nodes))
