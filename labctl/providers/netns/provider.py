"""The netns provider: each node is a network namespace on a LAN bridge, with its own sshd
(and UTS namespace, for its hostname). Once the nodes answer SSH, the playbooks do the rest.
What it finds on the host: host.py; its checks: checks.py; the nodes' sshd: labctl/host/sshd.py."""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
import time
from pathlib import Path

from labctl import fanout
from labctl.errors import HostError
from labctl.host import birdrun, links, preflight, sh, sshd
from labctl.host import routers as lab_routers
from labctl.host.hostside import alive, cmdline, lan_mac, lan_neighbours, link_exists, read_pid, terminate
from labctl.host.nsshell import NsShell
from labctl.live import impair, sshmux
from labctl.plan import names
from labctl.plan.layout import LabDir
from labctl.plan.model import LabModel, Node, Router
from labctl.providers.base import Provider, Remains, make_lab_keys
from labctl.providers.netns import checks, faults, host

BOOTSTRAP_WORKERS = 8  # the host's CPUs bound this, not the lab size: more only queue for them


def _each(fn, items: list) -> list:
    return fanout.each(fn, items, workers=BOOTSTRAP_WORKERS)


class NetnsProvider(Provider):
    name = "netns"
    up_playbook = "netns-up.yml"
    down_playbook = None
    dir: LabDir

    # -- checks before anything is created -------------------------------------------------

    def preflight(self, model: LabModel) -> list[str]:
        """Raise HostError if this host cannot run the lab; return warnings."""
        warnings = self.checks(model)
        preflight.need_root("the netns provider")
        preflight.need_tools(
            checks.TOOLS,
            "apt-get install -y bird2 openssh-server openssh-client iproute2 iputils-ping procps util-linux",
        )
        if not self.dir.state.exists() and host.left_on_host(self.dir) is not None:
            raise HostError(
                f"lab {model.name!r} is still on this host (namespaces, processes) but its directory "
                f"{self.dir.root} was removed",
                f"run `labctl down --name {model.name}` first",
            )
        bridge = names.bridge("lc", model.name)
        if link_exists(bridge) and not self.dir.state.exists() and not host.running_from(self.dir):
            raise HostError(
                f"a lab named {model.name!r} is already running from another labctl home",
                "take it down there, or rename this lab",
            )
        self.check_routes(model)
        return warnings

    def checks(self, model: LabModel) -> list[str]:
        """What the lab's own size and directory allow, needing no root and changing nothing:
        `validate`, `up --dry-run` and `up`'s preflight refuse alike. Returns warnings."""
        if other := host.other_home(self.dir):
            raise HostError(
                f"a lab named {model.name!r} is already running from another labctl home ({other})",
                f"take it down there (LABCTL_HOME={Path(other).parent} labctl down), or rename this lab",
            )
        preflight.safe_dir(self.dir.root, "node shell scripts")
        # Unix sockets (BIRD's control socket, ssh's ControlPath)
        preflight.socket_paths(
            self.dir.root, [self.dir.bird_socket(n.name) for n in model.nodes] + [self.dir.control_dir / ("x" * 40)]
        )
        # reading the host's routes needs no root: validate and --dry-run find an overlap as up does
        self.check_routes(model)
        return checks.check_neighbours(model)

    def check_routes(self, model: LabModel) -> None:
        ours = {n.bridge for n in (model.networks or {}).values() if n.bridge}
        preflight.check_routes(model, ours or names.bridge("lc", model.name))

    def birdc(self, node: Node | Router) -> str:
        """The shell command that talks to the node's BIRD (append a CLI command)."""
        return f"birdc -s {shlex.quote(node.bird_socket)}"

    def check_host_keys(self, model: LabModel, progress) -> None:
        return None  # bootstrap generated the nodes' host keys and pinned them itself

    def ipip_supported(self) -> bool:
        if Path("/sys/module/ipip").exists():
            return True
        return shutil.which("modprobe") is not None and sh.ok(["modprobe", "-n", "-q", "ipip"])

    def host_shell(self, node: Node | Router):
        """Nodes and routers are namespaces of this host: entered from here, not over their LAN."""
        return NsShell(names.netns("lc", self.lab.name, node.name), node)

    def netem_supported(self) -> bool | None:
        return impair.netem_on_this_host()  # the nodes are namespaces: this host's kernel is theirs

    # -- what a lab left on this host: host.py -----------------------------------------------

    @classmethod
    def left_on_host(cls, lab_dir: LabDir) -> Remains | None:
        return host.left_on_host(lab_dir)

    @classmethod
    def orphans(cls) -> list[str]:
        return host.orphans()

    @classmethod
    def other_home(cls, lab_dir: LabDir) -> str | None:
        return host.other_home(lab_dir)

    @classmethod
    def running_from(cls, lab_dir: LabDir) -> list[int]:
        return host.running_from(lab_dir)

    # -- faults on purpose: labctl/providers/netns/faults.py ----------------------------------

    fault_kinds = ("bird", "link", "node")

    def fail(self, model: LabModel, node: Node | Router, kind: str) -> dict:
        return faults.fail(self, model, node, kind)

    def repair(self, model: LabModel, node: Node | Router, kind: str, record) -> None:
        faults.repair(self, model, node, kind, record)

    # -- bring up --------------------------------------------------------------------------

    def bootstrap(self, model: LabModel, progress) -> dict:
        """Bridge, namespaces, NICs, keys and sshd; idempotent. Returns pids per node."""
        self._end_detached(model.name)
        if model.networks:
            return self._bootstrap_racks(model, progress)
        name = model.name
        br = names.bridge("lc", name)
        gw = model.network.gateway
        plen = ipaddress.IPv4Network(model.network.lan).prefixlen
        br_mac = lan_mac(gw)
        links.ensure_bridge(br, gw, plen)
        self._keys(model)
        # the host's side of SSH: each node's MAC on the bridge, fixed like the nodes' own entries below
        lan = [n.address for n in model.nodes]
        on_host = lan_neighbours(None, br, {a: lan_mac(a) for a in lan}, False)
        if on_host:
            sh.run(["ip", "-batch", "-"], input="\n".join(on_host) + "\n")

        def one(n: Node) -> int | dict:
            self.lab.checkpoint()  # a big lab takes a while: Ctrl-C is answered between nodes
            ns = names.netns("lc", name, n.name)
            nic, mac = n.interface, lan_mac(n.address)
            fresh = _plug(ns, names.host_link("lc", name, n.name), nic, mac, br)
            # one `ip -batch` per node: every step is idempotent, so a second up repeats it unchanged
            # setting a MAC, even the same one, flushes the device's neighbours (permanent ones too):
            # only a namespace made before labctl fixed its MACs needs it, and then starts afresh
            stale_mac = not fresh and _link_mac(ns, nic) != mac
            batch = [
                "link set lo up",
                *([f"link set {nic} address {mac}"] if stale_mac else []),
                f"addr replace {n.address}/{plen} dev {nic}",
                f"link set {nic} up",
                # the LAN gateway is the host, whose ip_forward stays 0: nothing leaves through it,
                # but proxy ARP for 169.254.1.1 needs a route towards it via another interface
                f"route replace default via {gw} dev {nic}",
            ]
            batch += lan_neighbours(
                ns, nic, {gw: br_mac} | {p: lan_mac(p) for p in lan if p != n.address}, fresh or stale_mac
            )
            sh.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch) + "\n")
            return sshd.sshd(self.dir, model, n, ns)

        # nodes are independent of each other: a few at a time, so a big lab's thousands of short
        # `ip`/`nsenter` processes overlap instead of running one after another
        pids = dict(zip([n.name for n in model.nodes], _each(one, model.nodes), strict=True))
        return sshd.await_sshd(self.dir, sshd.start(pids, self._bird_jobs(model)))

    def _bootstrap_racks(self, model: LabModel, progress) -> dict:
        """`networks:`: a bridge per network with an address of the host's on it (SSH reaches every node
        directly), routers as namespaces with a NIC in each network they join and forwarding on inside
        them only; each node's default route is its network's gateway, a router, never the host (whose
        ip_forward stays 0)."""
        name, nets = model.name, model.networks or {}
        members = lab_routers.lan_members(model, lambda n: lan_mac(n.address))
        lab_routers.ensure_bridges(model, members)
        self._keys(model)
        lab_routers.build(
            model,
            members,
            lambda r: names.netns("lc", name, r),
            lambda r, net: names.host_link("lc", name, f"{r}.{net}"),
            self.lab.checkpoint,
        )
        pids = {r.name: sshd.sshd(self.dir, model, r, names.netns("lc", name, r.name)) for r in model.routers or []}
        for n in model.nodes:
            self.lab.checkpoint()
            net = nets[n.network]
            ns = names.netns("lc", name, n.name)
            nic, mac = n.interface, lan_mac(n.address)
            fresh = _plug(ns, names.host_link("lc", name, n.name), nic, mac, net.bridge)
            plen = ipaddress.IPv4Network(net.lan).prefixlen
            batch = [
                "link set lo up",
                f"addr replace {n.address}/{plen} dev {nic}",
                f"link set {nic} up",
                # other networks are reached through the network's router; the host's address on the bridge
                # is only for SSH (its ip_forward is 0)
                f"route replace default via {net.gateway} dev {nic}",
            ]
            want = {a: m for a, m in members[n.network].items() if a != n.address}
            want[net.host] = lan_mac(net.host)
            batch += lan_neighbours(ns, nic, want, fresh)
            sh.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch) + "\n")
            pids[n.name] = sshd.sshd(self.dir, model, n, ns)
        return sshd.await_sshd(self.dir, sshd.start(pids, self._bird_jobs(model)))

    def _bird_jobs(self, model: LabModel) -> list[dict]:
        """BIRD on each node (and BGP router) where it does not run yet, started with the node as
        calico-node starts it with its pod: BIRD's 1 s connect delay then passes while ansible-playbook
        starts, not after its BGP play. That play still owns BIRD: it reloads a changed config (never
        done here: only a stopped BIRD gets the rendered one) and re-exports a route the kernel refused
        while the node's tunnel device did not exist yet."""
        # bgp: none (VXLAN only): no BIRD on the nodes; a router with an asn runs it whatever the design
        speakers: list[Node | Router] = [] if model.calico.bgp == "none" else list(model.nodes)
        jobs, bird = [], shutil.which("bird") or "/usr/sbin/bird"
        for n in speakers + [r for r in model.routers or [] if r.asn is not None]:
            if birdrun.running(n.dir, n.bird_socket) is not None:
                continue
            nd = Path(n.dir)
            (nd / "bird.pid").unlink(missing_ok=True)
            shutil.copyfile(self.dir.bird_conf(n.name), nd / "bird.conf")
            argv = birdrun.argv(nd, n.bird_socket, bird)
            ns = f"/run/netns/{names.netns('lc', model.name, n.name)}"
            jobs.append({"name": n.name, "netns": ns, "argv": argv})
        return jobs

    def _keys(self, model: LabModel) -> None:
        make_lab_keys(self.dir, model.name, model.speakers, _each)
        sshd.authorized_keys(self.dir)

    def _end_detached(self, lab: str) -> None:
        """A node's namespace deleted by hand (`ip netns del`) lives on while processes hold it: its
        sshd and BIRD (recorded in their pid files) and their sessions. Stop everything in such a
        namespace, by pid, so the node is built afresh (and its veth goes with the namespace)."""
        nodes = self.dir.root / "nodes"
        gone = set()
        for nd in nodes.iterdir() if nodes.is_dir() else ():
            ours = host.netns_id(Path(f"/run/netns/{names.netns('lc', lab, nd.name)}"))
            for pidfile in ("sshd.pid", "bird.pid"):
                pid = read_pid(nd / pidfile)
                if pid and alive(pid) and f"{nd}/" in cmdline(pid):
                    held = host.netns_id(Path(f"/proc/{pid}/ns/net"))
                    if held is not None and held != ours:
                        gone.add(held)
        if gone:
            terminate(host.pids_in_ids(gone))

    # -- tear down -------------------------------------------------------------------------

    def teardown(self, lab: LabModel | Remains, progress) -> None:
        """Remove whatever of the lab exists; one failure does not stop the rest."""
        name = lab.name
        errors: list[str] = []

        def attempt(fn, *args) -> None:
            try:
                fn(*args)
            except HostError as e:
                errors.append(str(e))

        attempt(sshmux.close_masters, self.dir)
        self.lab.checkpoint()
        self._end_detached(name)
        attempt(self._remove_nodes, name, [*lab.nodes, *(lab.routers or [])], self.lab.checkpoint)
        # what the host has beyond the lab data (a node of a data file written over, its pods): by the
        # lab's namespace names (another home's lab of this name is refused before teardown)
        attempt(self._remove_nodes, name, host.host_nodes(name), self.lab.checkpoint)
        terminate(host.running_from(self.dir))  # a node's sshd or BIRD left outside any namespace of the lab
        # ssh masters `-O exit` could not reach: their control socket went with a lab dir removed by hand
        host.kill_naming(self.dir.control_dir)
        self.lab.checkpoint()
        br = names.bridge("lc", name)
        if link_exists(br):
            attempt(sh.run, ["ip", "link", "del", br])
        # `networks:` labs: one bridge per network, named br-lc<id><4 hex>
        for link in sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(br)):
            if link != br:
                attempt(sh.run, ["ip", "link", "del", link])
        attempt(self._await_links_gone, name, 10 + 0.2 * len(lab.nodes))
        if errors:
            raise HostError(f"teardown of lab {name!r} incomplete: {'; '.join(errors)}", "run `labctl down` again")

    def _await_links_gone(self, name: str, seconds: float) -> None:
        """`ip netns del` returns before the kernel has released the veths."""
        prefix, br = f"lc{names.lab_id('lc', name)}", names.bridge("lc", name)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.lab.checkpoint()
            links = sh.run(["ip", "-o", "link", "show"]).stdout
            if f": {prefix}" not in links and f": {br}" not in links:
                return
            time.sleep(0.05)
        raise HostError(f"host links {prefix}* still present after {seconds:.0f} s")

    def remove_nodes(self, model: LabModel, names: list[str], progress) -> None:
        """Take some nodes out of a running lab (reconcile); `model` is the lab before the change."""
        gone = [n for n in model.nodes if n.name in names]
        for n in gone:
            progress.info(f"  removing node {n.name}")
        self._remove_nodes(model.name, gone)

    @staticmethod
    def _remove_nodes(lab: str, nodes: list, checkpoint=lambda: None) -> None:
        """nodes: Node, Router or LeftNode (name, pods[].netns)."""
        # pods first, then the node: the host end of the node's NIC goes with its namespace
        spaces = [p.netns for n in nodes for p in n.pods] + [names.netns("lc", lab, n.name) for n in nodes]
        host.kill_in(spaces)

        def close_sockets(n) -> None:
            # what the dead processes left unsent (a BGP peer that stopped reading, say) would sit
            # in orphaned sockets retrying for minutes, each holding the namespace and its veth
            ns = names.netns("lc", lab, n.name)
            if Path(f"/run/netns/{ns}").exists():
                sh.run(["nsenter", f"--net=/run/netns/{ns}", "ss", "-tKn", "state", "connected"], check=False)

        def delete(ns: str) -> None:
            checkpoint()
            if Path(f"/run/netns/{ns}").exists():
                sh.run(["ip", "netns", "del", ns])

        _each(close_sockets, nodes)
        _each(delete, spaces)


def _plug(ns: str, veth: str, nic: str, mac: str, bridge: str) -> bool:
    """Namespace ns (made if missing) with its NIC nic (MAC mac) on bridge through the host's veth;
    idempotent. True if the namespace is new."""
    fresh = not Path(f"/run/netns/{ns}").exists()
    if fresh:
        sh.run(["ip", "netns", "add", ns])
    if link_exists(veth) and not sh.ok(["ip", "-n", ns, "link", "show", nic]):
        # the veth of a namespace deleted a moment ago: the kernel frees it asynchronously
        _wait_gone(veth, 10.0) or sh.run(["ip", "link", "del", veth], check=False)
    if not link_exists(veth):
        sh.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", nic, "address", mac, "netns", ns])
    sh.run(["ip", "link", "set", veth, "master", bridge, "up"])
    return fresh


def _link_mac(ns: str, dev: str) -> str:
    p = sh.run(["ip", "-n", ns, "-j", "link", "show", dev], check=False)
    return (json.loads(p.stdout or "[{}]") or [{}])[0].get("address", "") if p.returncode == 0 else ""


def _wait_gone(link: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while link_exists(link):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
