"""Talking to live nodes over SSH (paramiko) and reading their network state.

Both providers are read the same way: one SSH session per node runs a probe script whose
sections are parsed here. Host keys must match the lab's known_hosts."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import threading
from dataclasses import dataclass, field

from labctl import fanout
from labctl.errors import LabctlError
from labctl.live import access, bird, iproute
from labctl.live.bird import Session
from labctl.plan.model import Node, Router, as_node
from labctl.spec import calico
from labctl.spec.providers import traits

SECTION = "=====labctl:"


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
    vtep_mac: str = ""  # the MAC of vxlan.calico, which the peers' neighbour/fdb entries name
    block: str = ""
    labels: dict = field(default_factory=dict)
    sessions: list[Session] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    neigh: list[dict] = field(default_factory=list)  # on vxlan.calico
    fdb: list[dict] = field(default_factory=list)  # on vxlan.calico
    names: dict[str, str] | None = None  # node name -> address as this node resolves it (None: not read)
    bird_running: bool = False
    extra: dict[str, str] = field(default_factory=dict)  # outputs of the caller's extra commands
    k8s: dict = field(default_factory=dict)  # vm control plane: nodes, pods, daemonsets from the API


class NodeShell:
    """One SSH connection to a node, through its jump host if it has one (access.Access says how);
    nothing is sent unless the host's route to the node leaves through the lab's bridge."""

    def __init__(self, lab_dir, node: Node | Router | dict, timeout: float = 3.0):
        paramiko = access.paramiko()  # heavy; only commands that reach nodes import it
        self.node = node = as_node(node)
        acc = access.of_node(node)
        acc.check_route(node.address)
        if acc.jump is not None:
            acc.check_route(acc.jump.host)
        self.jump = None
        try:
            sock = None
            if acc.jump is not None:
                self.jump = self._client(paramiko, lab_dir, acc.jump_kwargs(timeout))
                sock = self.jump.get_transport().open_channel(
                    "direct-tcpip", (node.address, acc.port), ("127.0.0.1", 0), timeout=timeout
                )
            self.client = self._client(paramiko, lab_dir, acc.connect_kwargs(node.address, timeout) | {"sock": sock})
        except Exception as e:  # paramiko raises many types; all mean "unreachable"
            if self.jump is not None:
                self.jump.close()
            why = recorded_fault(lab_dir, node.name)
            raise LabctlError(
                f"ssh {node.name} ({node.address}): {e.__class__.__name__}: {e}" + (f" ({why})" if why else ""),
                f"`labctl repair {node.name}` (or `labctl up`) undoes it" if why else None,
            ) from None

    @classmethod
    def patient(cls, lab_dir, node: Node | Router | dict, timeouts: tuple[float, ...] = (3.0, 8.0, 20.0)) -> NodeShell:
        """A connection that tries again with longer timeouts: over a lossy link (`labctl impair
        --loss`) the handshake's packets are lost and retransmitted, and one short try times out."""
        return retry(lambda t: cls(lab_dir, node, timeout=t), timeouts)

    @staticmethod
    def _client(paramiko, lab_dir, kwargs: dict):
        c = paramiko.SSHClient()
        c.load_host_keys(str(lab_dir.known_hosts))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())  # keys are pinned by up, never here
        c.connect(**kwargs)
        return c

    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
        try:
            _, out, err = self.client.exec_command(command, timeout=timeout)
            o = out.read().decode(errors="replace")
            e = err.read().decode(errors="replace")
            return out.channel.recv_exit_status(), o, e
        except (TimeoutError, OSError, EOFError) as e:
            # socket.timeout is TimeoutError; a dropped connection is EOFError/OSError
            what = f"no answer within {timeout:g} s" if isinstance(e, TimeoutError) else f"{e.__class__.__name__}: {e}"
            raise LabctlError(f"ssh {self.node.name} ({self.node.address}): {what}") from None

    def stream(self, command: str, stdin: int | None, stdout, stderr) -> int:
        """Run `command`, writing its stdout/stderr to these binary files as it comes and feeding
        it fd `stdin` (EOF included); no timeout while it runs. Ctrl-C (KeyboardInterrupt) kills
        the remote command's process group, then propagates. Returns the exit code."""

        chan = self.client.get_transport().open_session()
        chan.settimeout(None)
        # the first stdout line is the remote shell's pid: sshd makes it a process group leader
        # (setsid), so a Ctrl-C can end the command with everything it started
        # `exit $?` last: the shell does not exec the command in its place, so a command killed by a
        # signal is reported as 128+n (an exit by signal gives no status over SSH)
        chan.exec_command(f"echo $$; {command}\nexit $?")
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


def retry(connect, timeouts: tuple[float, ...]):
    """connect(timeout) for each timeout in turn until one succeeds; the last failure is raised. A
    refused route (access.RouteError) is not tried again: nothing was sent."""
    for i, t in enumerate(timeouts):
        try:
            return connect(t)
        except access.RouteError:
            raise
        except LabctlError:
            if i == len(timeouts) - 1:
                raise
    raise LabctlError("no connection attempt")


def recorded_fault(lab_dir, node: str) -> str:
    """What `labctl fail` did to the node and has not been repaired ("" if nothing), from the lab state."""
    try:
        faults = json.loads(lab_dir.state.read_text()).get("faults") or {}
    except (OSError, ValueError, AttributeError):
        return ""
    kinds = [k for k in ("node", "link", "bird") if k in (faults.get(node) or {})]
    what = {"node": "frozen", "link": "its LAN link is down", "bird": "its BIRD is stopped"}
    return f"{node} is failed on purpose by `labctl fail {node} {kinds[0]}`: {what[kinds[0]]}" if kinds else ""


def sudo(node: Node | Router | dict) -> str:
    return "sudo -n " if access.of_node(node).become else ""


def probe_script(
    node: Node | dict,
    extra: dict[str, str] | None = None,
    provider: str = "netns",
    birdc: str | None = None,
    names: list[str] | tuple = (),
) -> str:
    """One shell script whose sections parse_probe reads; `birdc` is the provider's way to reach
    BIRD on this node, `names` the other nodes whose addresses the node must resolve."""
    # addr without -4: the links' MACs (the VTEP's) come only with the link-layer part
    parts = {"hostname": "hostname", "addr": "ip -j addr show", "route": "ip -j -4 route show"}
    parts["neigh"] = "ip -j -4 neigh show dev vxlan.calico 2>/dev/null"
    parts["fdb"] = "bridge -j fdb show dev vxlan.calico 2>/dev/null"
    if names:
        parts["names"] = "getent hosts " + " ".join(shlex.quote(n) for n in names)
    node = as_node(node)
    birdc = birdc or f"birdc -s {shlex.quote(node.bird_socket or '/var/run/calico/bird.ctl')}"
    if traits(provider).labels_in_kubernetes:
        if node.role == "control-plane":
            parts["k8s"] = f"{sudo(node)}{KUBECTL} get nodes,pods,daemonsets -A -o json 2>/dev/null || echo '{{}}'"
    else:
        labels = shlex.quote(f"{node.dir}/labels.json") if node.dir else "/dev/null"
        parts["labels"] = f"cat {labels} 2>/dev/null || echo '{{}}'"
    parts["bird"] = f"{birdc} show protocols 2>&1"
    parts |= {f"extra:{k}": f'{cmd}; echo "rc=$?"' for k, cmd in (extra or {}).items()}
    return "; ".join(f"echo '{SECTION}{k}'; {cmd}" for k, cmd in parts.items())


def _json(text: str | None, empty):
    try:
        v = json.loads(text) if text and text.strip() else empty
    except ValueError:
        return empty
    return v if isinstance(v, type(empty)) else empty


def parse_names(text: str) -> dict[str, str]:
    """`getent hosts A B ...` -> {name: address} for the names that resolved (as name or alias)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        addr, *names = line.split() or [""]
        for n in names:
            out.setdefault(n, addr)
    return out


def parse_probe(facts: NodeFacts, out: str, protocols: set[str] | None = None) -> NodeFacts:
    """Fill facts from the probe's output; `protocols` are the route protocols of the pod network
    (calico.lab_protocols: who programs them in this lab, by Calico version and encapsulation)."""
    sections: dict[str, str] = {}
    key = None
    for line in out.splitlines():
        if line.startswith(SECTION):
            key = line[len(SECTION) :]
            sections[key] = ""
        elif key:
            sections[key] += line + "\n"
    facts.hostname = sections.get("hostname", "").strip()
    for link in iproute.loads(sections.get("addr", "")):
        for a in link.get("addr_info", []):
            if a.get("family", "inet") != "inet":
                continue
            if a.get("local") == facts.address:
                facts.interface, facts.physical_ip = link["ifname"], f"{a['local']}/{a['prefixlen']}"
            if link.get("ifname") in calico.TUNNELS and a.get("prefixlen") == 32:
                facts.tunnel_device, facts.tunnel_ip = link["ifname"], a["local"]
        if calico.vteps(link.get("ifname")):
            facts.vtep_mac = link.get("address", "")
    facts.routes = iproute.loads(sections.get("route", ""))
    facts.block = iproute.own_block(facts.routes, protocols or {calico.BIRD})
    facts.neigh = iproute.loads(sections.get("neigh", ""))
    facts.fdb = iproute.loads(sections.get("fdb", ""))
    if "names" in sections:
        facts.names = parse_names(sections["names"])
    text = sections.get("bird", "")
    facts.bird_running = bird.running(text)
    facts.sessions = bird.sessions(text)
    facts.labels = _json(sections.get("labels"), {})
    facts.extra = {k[len("extra:") :]: v for k, v in sections.items() if k.startswith("extra:")}
    facts.k8s = _json(sections.get("k8s"), {})
    return facts


def gather(
    lab_dir,
    nodes: list[Node],
    extra: dict[str, dict[str, str]] | None = None,
    provider: str = "netns",
    birdc=None,
    protocols: set[str] | None = None,
    names: bool = False,
    timeout: float = 30.0,
    shell=None,
) -> list[NodeFacts]:
    """Probe every node in parallel, one SSH session each; `extra` adds commands per node
    (name -> {key: command}) whose output and exit code land in NodeFacts.extra; `birdc(node)` is
    the provider's BIRD command; `names`: also resolve every other node's name on each node;
    `shell(node)`: the connection to use, as a context manager (default: a new NodeShell; `labctl
    view` keeps them open between reads). Unreachable nodes come back with reachable=False."""
    shell = shell or (lambda node: NodeShell(lab_dir, node))

    def one(node: Node) -> NodeFacts:
        f = NodeFacts(node.name, node.address)
        others = [n.name for n in nodes if n.name != node.name] if names else []
        script = probe_script(node, (extra or {}).get(node.name), provider, birdc(node) if birdc else None, others)
        try:
            with shell(node) as s:
                rc, out, err = s.run(script, timeout=timeout)
        except access.RouteError:
            raise  # the lab's bridge is gone: the command stops, for every node at once
        except LabctlError as e:
            f.error = str(e)
            return f
        f.reachable = True
        return parse_probe(f, out, protocols)

    return fanout.each(one, nodes)
