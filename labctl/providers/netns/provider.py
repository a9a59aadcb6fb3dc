"""The netns provider: each node is a network namespace on a LAN bridge, with its own sshd
(and UTS namespace, for its hostname). Once the nodes answer SSH, the playbooks do the rest."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import HostError
from labctl.host import birdrun, links, preflight, sh, sshd
from labctl.host import routers as lab_routers
from labctl.host.hostside import alive, cmdline, lan_mac, lan_neighbours, link_exists, read_pid, terminate
from labctl.host.nsshell import NsShell
from labctl.plan import names
from labctl.plan.layout import LabDir
from labctl.providers.base import LeftNode, LeftPod, Provider, Remains, make_lab_keys

TOOLS = ("ip", "bridge", "bird", "birdc", "sshd", "ssh", "ssh-keygen", "nsenter", "unshare", "ping", "sysctl")


class NetnsProvider(Provider):
    name = "netns"
    up_playbook = "netns-up.yml"
    down_playbook = None
    dir: LabDir

    # -- checks before anything is created -------------------------------------------------

    def preflight(self, model) -> list[str]:
        """Raise HostError if this host cannot run the lab; return warnings."""
        warnings = self.checks(model)
        data = model.to_data()
        preflight.need_root("the netns provider")
        preflight.need_tools(
            TOOLS, "apt-get install -y bird2 openssh-server openssh-client iproute2 iputils-ping procps util-linux"
        )
        if not self.dir.state.exists() and orphan_data(self.dir) is not None:
            raise HostError(
                f"lab {data['name']!r} is still on this host (namespaces, processes) but its directory "
                f"{self.dir.root} was removed",
                f"run `labctl down --name {data['name']}` first",
            )
        if link_exists(names.bridge("lc", data["name"])) and not self.dir.state.exists() and not running_from(self.dir):
            raise HostError(
                f"a lab named {data['name']!r} is already running from another labctl home",
                "take it down there, or rename this lab",
            )
        self.check_routes(model)
        return warnings

    def checks(self, model) -> list[str]:
        """What the lab's own size and directory allow, needing no root and changing nothing:
        `validate`, `up --dry-run` and `up`'s preflight refuse alike. Returns warnings."""
        data = model.to_data()
        # the lab dir is interpolated unquoted into the shell scripts run on the nodes (node_dir,
        # lab_dir) and into sshd/BIRD/ansible configs: allow only characters that need no quoting
        if other := other_home(self.dir):
            raise HostError(
                f"a lab named {data['name']!r} is already running from another labctl home ({other})",
                f"take it down there (LABCTL_HOME={Path(other).parent} labctl down), or rename this lab",
            )
        preflight.safe_dir(self.dir.root, "node shell scripts")
        # Unix sockets (BIRD's control socket, ssh's ControlPath)
        preflight.socket_paths(
            self.dir.root, [self.dir.bird_socket(n.name) for n in model.nodes] + [self.dir.control_dir / ("x" * 40)]
        )
        # reading the host's routes needs no root: validate and --dry-run find an overlap as up does
        self.check_routes(model)
        return self.check_neighbours(data)

    def check_neighbours(self, data: dict) -> list[str]:
        """Refuse a lab the host's neighbour table cannot hold. The table is one for every namespace,
        capped by gc_thresh3 (1024 by default); past it new entries fail ("neighbor table overflow")
        and sessions and pings stall. labctl writes every neighbour the lab uses as a permanent entry,
        which Linux >= 4.19 keeps out of that count (see _lan_neighbours): then the lab adds nothing
        to it, at any size. Older kernels count permanent entries too."""
        need = neighbour_need(data)
        counted = need.dynamic + (0 if kernel_exempts_permanent() else need.permanent)
        limit = _read_int(GC_THRESH3)
        knobs = "net.ipv4.neigh.default.gc_thresh"
        raise_it = f"sysctl -w {knobs}2={2 * counted} {knobs}3={4 * counted}"
        if limit is not None and counted > limit:
            raise HostError(
                f"lab {data['name']!r} needs {counted} neighbour entries, more than the host's neighbour table "
                f"holds for all namespaces together (net.ipv4.neigh.default.gc_thresh3 = {limit}; this kernel, "
                f"{os.uname().release}, counts permanent entries against it): its sessions and pings would stall",
                f"raise the host's limit: {raise_it}, or use a kernel >= 4.19",
            )
        soft = _read_int(GC_THRESH3.with_name("gc_thresh2"))
        if soft is not None and counted > soft:
            # past gc_thresh2 the kernel evicts entries older than 5 s: it works, with re-resolution delays
            return [
                f"this lab needs {counted} neighbour entries, over the host's gc_thresh2 ({soft}): the kernel "
                f"will evict and re-resolve them (slower); `{raise_it}` avoids it"
            ]
        return []

    def check_routes(self, model) -> None:
        ours = {n.bridge for n in (model.networks or {}).values()}
        preflight.check_routes(model, ours or names.bridge("lc", model.name))

    def birdc(self, node: dict) -> str:
        """The shell command that talks to the node's BIRD (append a CLI command)."""
        import shlex

        from labctl.plan.model import as_node

        return f"birdc -s {shlex.quote(as_node(node).bird_socket)}"

    def check_host_keys(self, model, progress) -> None:
        return None  # bootstrap generated the nodes' host keys and pinned them itself

    def ipip_supported(self) -> bool:
        if Path("/sys/module/ipip").exists():
            return True
        return shutil.which("modprobe") is not None and sh.ok(["modprobe", "-n", "-q", "ipip"])

    def host_shell(self, node):
        """Nodes and routers are namespaces of this host: entered from here, not over their LAN."""
        return NsShell(names.netns("lc", self.lab.name, node.name), node)

    def netem_supported(self) -> bool | None:
        from labctl.live import impair

        return impair.netem_on_this_host()  # the nodes are namespaces: this host's kernel is theirs

    # -- faults on purpose: labctl/providers/netns/faults.py ----------------------------------

    fault_kinds = ("bird", "link", "node")

    def fail(self, model, node, kind: str) -> dict:
        from labctl.providers.netns import faults as netns_faults

        return netns_faults.fail(self, model.to_data(), node.to_data(), kind)

    def repair(self, model, node, kind: str, record: dict) -> None:
        from labctl.providers.netns import faults as netns_faults

        netns_faults.repair(self, model.to_data(), node.to_data(), kind, record)

    # -- bring up --------------------------------------------------------------------------

    def bootstrap(self, model, progress) -> dict:
        """Bridge, namespaces, NICs, keys and sshd; idempotent. Returns pids per node."""
        data = model.to_data()
        self._end_detached(data["name"])
        if data.get("networks"):
            return self._bootstrap_racks(model, progress)
        name = data["name"]
        br = names.bridge("lc", name)
        gw = data["network"]["gateway"]
        plen = ipaddress.IPv4Network(data["network"]["lan"]).prefixlen
        br_mac = lan_mac(gw)
        links.ensure_bridge(br, gw, plen)
        self._keys(data)
        # the host's side of SSH: each node's MAC on the bridge, fixed like the nodes' own entries below
        lan = [n["address"] for n in data["nodes"]]
        everyone = [(x["address"], x["name"]) for x in data["nodes"]]
        host = lan_neighbours(None, br, {a: lan_mac(a) for a in lan}, False)
        if host:
            sh.run(["ip", "-batch", "-"], input="\n".join(host) + "\n")

        def one(n: dict) -> int | None:
            self.lab.checkpoint()  # a big lab takes a while: Ctrl-C is answered between nodes
            ns = names.netns("lc", name, n["name"])
            nic, mac = n["interface"], lan_mac(n["address"])
            fresh = _plug(ns, names.host_link("lc", name, n["name"]), nic, mac, br)
            # one `ip -batch` per node: every step is idempotent, so a second up repeats it unchanged
            # setting a MAC, even the same one, flushes the device's neighbours (permanent ones too):
            # only a namespace made before labctl fixed its MACs needs it, and then starts afresh
            stale_mac = not fresh and _link_mac(ns, nic) != mac
            batch = [
                "link set lo up",
                *([f"link set {nic} address {mac}"] if stale_mac else []),
                f"addr replace {n['address']}/{plen} dev {nic}",
                f"link set {nic} up",
                # the LAN gateway is the host, whose ip_forward stays 0: nothing leaves through it,
                # but proxy ARP for 169.254.1.1 needs a route towards it via another interface
                f"route replace default via {gw} dev {nic}",
            ]
            batch += lan_neighbours(
                ns, nic, {gw: br_mac} | {p: lan_mac(p) for p in lan if p != n["address"]}, fresh or stale_mac
            )
            sh.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch) + "\n")
            return sshd.job(self.dir, n["name"], n["address"], ns, everyone)

        # nodes are independent of each other: a few at a time, so a big lab's thousands of short
        # `ip`/`nsenter` processes overlap instead of running one after another
        pids = dict(zip([n["name"] for n in data["nodes"]], _each(one, data["nodes"]), strict=True))
        return sshd.started(self.dir, sshd.start(pids, self._bird_jobs(data)))

    def _bootstrap_racks(self, model, progress) -> dict:
        """`networks:`: a bridge per network with an address of the host's on it (SSH reaches every node
        directly), routers as namespaces with a NIC in each network they join and forwarding on inside
        them only; each node's default route is its network's gateway, a router, never the host (whose
        ip_forward stays 0)."""
        data = model.to_data()
        name = data["name"]
        nets = data["networks"]
        members = lab_routers.lan_members(model, lambda n: lan_mac(n.address))
        lab_routers.ensure_bridges(model, members)
        self._keys(data)
        lab_routers.build(
            model,
            members,
            lambda r: names.netns("lc", name, r),
            lambda r, net: names.host_link("lc", name, f"{r}.{net}"),
            self.lab.checkpoint,
        )
        everyone = [(x["address"], x["name"]) for x in data["nodes"]]
        pids = {
            r["name"]: sshd.job(self.dir, r["name"], r["address"], names.netns("lc", name, r["name"]), everyone)
            for r in data.get("routers", [])
        }
        for n in data["nodes"]:
            self.lab.checkpoint()
            net = nets[n["network"]]
            ns = names.netns("lc", name, n["name"])
            nic, mac = n["interface"], lan_mac(n["address"])
            fresh = _plug(ns, names.host_link("lc", name, n["name"]), nic, mac, net["bridge"])
            plen = ipaddress.IPv4Network(net["lan"]).prefixlen
            batch = [
                "link set lo up",
                f"addr replace {n['address']}/{plen} dev {nic}",
                f"link set {nic} up",
                # other networks are reached through the network's router; the host's address on the bridge
                # is only for SSH (its ip_forward is 0)
                f"route replace default via {net['gateway']} dev {nic}",
            ]
            want = {a: m for a, m in members[n["network"]].items() if a != n["address"]}
            want[net["host"]] = lan_mac(net["host"])
            batch += lan_neighbours(ns, nic, want, fresh)
            sh.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch) + "\n")
            pids[n["name"]] = sshd.job(self.dir, n["name"], n["address"], ns, everyone)
        return sshd.started(self.dir, sshd.start(pids, self._bird_jobs(data)))

    def _bird_jobs(self, data: dict) -> list[dict]:
        """BIRD on each node (and BGP router) where it does not run yet, started with the node as
        calico-node starts it with its pod: BIRD's 1 s connect delay then passes while ansible-playbook
        starts, not after its BGP play. That play still owns BIRD: it reloads a changed config (never
        done here: only a stopped BIRD gets the rendered one) and re-exports a route the kernel refused
        while the node's tunnel device did not exist yet."""
        # bgp: none (VXLAN only): no BIRD on the nodes; a router with an asn runs it whatever the design
        nodes = [] if data["calico"].get("bgp") == "none" else data["nodes"]
        jobs, bird = [], shutil.which("bird") or "/usr/sbin/bird"
        for n in nodes + [r for r in data.get("routers", []) if r.get("asn") is not None]:
            if birdrun.running(n["dir"], n["bird_socket"]) is not None:
                continue
            nd = Path(n["dir"])
            (nd / "bird.pid").unlink(missing_ok=True)
            shutil.copyfile(self.dir.bird_conf(n["name"]), nd / "bird.conf")
            argv = birdrun.argv(nd, n["bird_socket"], bird)
            ns = f"/run/netns/{names.netns('lc', data['name'], n['name'])}"
            jobs.append({"name": n["name"], "netns": ns, "argv": argv})
        return jobs

    def _keys(self, data: dict) -> None:
        d = self.dir
        make_lab_keys(d, data["name"], data["nodes"] + data.get("routers", []), _each)
        sshd.authorized_keys(d)

    def _end_detached(self, lab: str) -> None:
        """A node's namespace deleted by hand (`ip netns del`) lives on while processes hold it: its
        sshd and BIRD (recorded in their pid files) and their sessions. Stop everything in such a
        namespace, by pid, so the node is built afresh (and its veth goes with the namespace)."""
        nodes = self.dir.root / "nodes"
        gone = set()
        for nd in nodes.iterdir() if nodes.is_dir() else ():
            ours = _netns_id(Path(f"/run/netns/{names.netns('lc', lab, nd.name)}"))
            for pidfile in ("sshd.pid", "bird.pid"):
                pid = read_pid(nd / pidfile)
                if pid and alive(pid) and f"{nd}/" in cmdline(pid):
                    held = _netns_id(Path(f"/proc/{pid}/ns/net"))
                    if held is not None and held != ours:
                        gone.add(held)
        if gone:
            terminate(_pids_in_ids(gone))

    # -- tear down -------------------------------------------------------------------------

    def teardown(self, lab, progress) -> None:
        """Remove whatever of the lab exists; one failure does not stop the rest."""
        data = lab.to_data()
        name = data["name"]
        errors: list[str] = []

        def attempt(fn, *args) -> None:
            try:
                fn(*args)
            except HostError as e:
                errors.append(str(e))

        attempt(self._close_masters)
        self.lab.checkpoint()
        self._end_detached(name)
        attempt(self._remove_nodes, name, data["nodes"] + data.get("routers", []), self.lab.checkpoint)
        # what the host has beyond the lab data (a node of a data file written over, its pods): by the
        # lab's namespace names (another home's lab of this name is refused before teardown)
        attempt(self._remove_nodes, name, _host_nodes(name), self.lab.checkpoint)
        terminate(running_from(self.dir))  # a node's sshd or BIRD left outside any namespace of the lab
        # ssh masters `-O exit` could not reach: their control socket went with a lab dir removed by hand
        _kill_naming(self.dir.control_dir)
        self.lab.checkpoint()
        br = names.bridge("lc", name)
        if link_exists(br):
            attempt(sh.run, ["ip", "link", "del", br])
        # `networks:` labs: one bridge per network, named br-lc<id><4 hex>
        for link in sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(br)):
            if link != br:
                attempt(sh.run, ["ip", "link", "del", link])
        # `ip netns del` returns before the kernel has released the veths
        prefix = f"lc{names.lab_id('lc', name)}"
        deadline = time.monotonic() + 10 + 0.2 * len(data["nodes"])
        while time.monotonic() < deadline:
            self.lab.checkpoint()
            links = sh.run(["ip", "-o", "link", "show"]).stdout
            if f": {prefix}" not in links and f": {br}" not in links:
                break
            time.sleep(0.05)
        else:
            errors.append(f"host links {prefix}* still present after {10 + 0.2 * len(data['nodes']):.0f} s")
        if errors:
            raise HostError(f"teardown of lab {name!r} incomplete: {'; '.join(errors)}", "run `labctl down` again")

    def remove_nodes(self, model, names: list[str], progress) -> None:
        """Take some nodes out of a running lab (reconcile); `model` is the lab before the change."""
        data = model.to_data()
        gone = [n for n in data["nodes"] if n["name"] in names]
        for n in gone:
            progress.info(f"  removing node {n['name']}")
        self._remove_nodes(data["name"], gone)

    @staticmethod
    def _remove_nodes(lab: str, nodes: list[dict], checkpoint=lambda: None) -> None:
        # pods first, then the node: the host end of the node's NIC goes with its namespace
        spaces = [p["netns"] for n in nodes for p in n.get("pods", [])] + [
            names.netns("lc", lab, n["name"]) for n in nodes
        ]
        _kill_in(spaces)

        def close_sockets(n: dict) -> None:
            # what the dead processes left unsent (a BGP peer that stopped reading, say) would sit
            # in orphaned sockets retrying for minutes, each holding the namespace and its veth
            ns = names.netns("lc", lab, n["name"])
            if Path(f"/run/netns/{ns}").exists():
                sh.run(["nsenter", f"--net=/run/netns/{ns}", "ss", "-tKn", "state", "connected"], check=False)

        def delete(ns: str) -> None:
            checkpoint()
            if Path(f"/run/netns/{ns}").exists():
                sh.run(["ip", "netns", "del", ns])

        _each(close_sockets, nodes)
        _each(delete, spaces)

    @classmethod
    def left_on_host(cls, lab_dir):
        return orphan_data(lab_dir)

    @classmethod
    def orphans(cls) -> list[str]:
        return orphans()

    @classmethod
    def other_home(cls, lab_dir):
        return other_home(lab_dir)

    @classmethod
    def running_from(cls, lab_dir):
        return running_from(lab_dir)

    def _close_masters(self) -> None:
        cp = self.dir.control_dir
        if not cp.is_dir():
            return
        for sock in cp.iterdir():
            sh.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "labctl-node"], check=False, timeout=5)


def _lab_spaces(lab: str) -> list[str]:
    try:
        # a real namespace is an nsfs mount; a plain file of that name is not a lab's (nor ours to clean)
        return sorted(
            p.name for p in Path("/run/netns").iterdir() if p.name.startswith(f"lc-{lab}.") and os.path.ismount(p)
        )
    except OSError:
        return []


def other_home(lab_dir: LabDir) -> str | None:
    """The lab dir of another labctl home whose lab of this name runs on this host (the processes in
    the lab's namespaces run from there: sshd and BIRD name their node dir), else None. The names on
    the host (namespaces, links) come from the lab name alone: they never tell whose lab it is."""
    name = lab_dir.root.name
    node_dir = re.compile(rf"(/[^\s]*/{re.escape(name)})/nodes/")
    for pid in _pids_in(_lab_spaces(name)):
        m = node_dir.search(cmdline(pid))
        if m and m[1] != str(lab_dir.root):
            return m[1]
    return None


def running_from(lab_dir: LabDir) -> list[int]:
    """The processes of this host that run from the lab dir's node dirs (sshd, BIRD; in their node's
    namespace or, if it was deleted by hand, in none left): the lab's own, by pid."""
    return _naming(lab_dir.root / "nodes")


def orphan_data(lab_dir: LabDir, sure: bool = False) -> Remains | None:
    """The namespaces (nodes and pods) of a lab named like this lab dir, as teardown's lab data,
    when the dir itself is gone; None if there are none, or if their processes name the same lab
    of another labctl home (whose lab it is). sure: only if a process names this lab dir (namespaces
    with no process left could be another home's lab being built)."""
    name = lab_dir.root.name
    spaces = _lab_spaces(name)
    if not spaces:
        return None
    mine, seen = f"{lab_dir.root}/", False
    for ns in spaces:
        for pid in sh.run(["ip", "netns", "pids", ns], check=False).stdout.split():
            cmd = cmdline(int(pid))
            if f"/{name}/nodes/" in cmd and mine not in cmd:
                return None
            seen = seen or mine in cmd
    if sure and not seen:
        return None
    nodes = [LeftNode(n["name"], [LeftPod(p["netns"]) for p in n["pods"]]) for n in _host_nodes(name, spaces)]
    return Remains(name, "netns", nodes)


def _host_nodes(name: str, spaces: list[str] | None = None) -> list[dict]:
    """The lab's nodes (and routers) as its namespaces on this host show them, with their pods'."""
    nodes: dict[str, dict] = {}
    for ns in _lab_spaces(name) if spaces is None else spaces:
        node, _, pod = ns[len(f"lc-{name}.") :].partition(".")
        nodes.setdefault(node, {"name": node, "pods": []})
        if pod:
            nodes[node]["pods"].append({"netns": ns})
    return list(nodes.values())


def orphans() -> list[str]:
    from labctl.plan import layout
    from labctl.spec import topology

    try:
        names = {
            p.name[3:].split(".")[0]
            for p in Path("/run/netns").iterdir()
            if p.name.startswith("lc-") and os.path.ismount(p)
        }
    except OSError:
        return []
    out = []
    for name in sorted(names):
        d = layout.lab_dir(name)
        if topology.LAB_NAME.fullmatch(name) and not d.is_lab() and orphan_data(d, sure=True) is not None:
            out.append(name)
    return out


def _naming(parent: Path) -> list[int]:
    """The processes whose command line names a path in this directory: an ssh master's names its
    ControlPath ("ssh: <lab>/ssh/cp/<hash> [mux]"), a node's sshd and BIRD their node dir."""
    mark = f"{parent}/"
    me = {os.getpid(), os.getppid()}
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in me and mark in cmdline(int(p))]


def _kill_naming(parent: Path) -> None:
    """Stop (by pid) the processes whose command line names a path in this directory."""
    terminate(_naming(parent))


GC_THRESH3 = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")


@dataclass(frozen=True)
class NeighbourNeed:
    permanent: int  # written by labctl: out of gc_thresh's count on Linux >= 4.19
    dynamic: int  # resolved by ARP: counted against gc_thresh1/2/3


def neighbour_need(data: dict) -> NeighbourNeed:
    """The IPv4 neighbour entries a running lab holds, all namespaces together: the host's entry for
    each node on the bridge; each node's for the gateway and every other node on the LAN (BGP
    sessions, and with reflectors the data path goes node to node too); with VXLAN each node's VTEP
    entry per peer; per pod one on each side of its veth. All permanent: nothing on the lab's paths
    is left to ARP (tests/test_netns_lifecycle.py pins this against a live count)."""
    n = len(data["nodes"])
    vteps = n * (n - 1) if data["calico"].get("tunnel_device") == "vxlan.calico" else 0
    pods = sum(len(node.get("pods", [])) for node in data["nodes"])
    return NeighbourNeed(permanent=n + n * n + vteps + 2 * pods, dynamic=0)


def kernel_exempts_permanent(release: str | None = None) -> bool:
    """Linux 4.19 took permanent neighbour entries out of the gc_thresh count (commit 58956317c8de)."""
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return m is not None and (int(m[1]), int(m[2])) >= (4, 19)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


BOOTSTRAP_WORKERS = 8  # the host's CPUs bound this, not the lab size: more only queue for them


def _each(fn, items: list) -> list:
    """fn(item) for every item, a few at a time, results in order. The first error (an Interrupted
    from a checkpoint or a Ctrl-C'd child, a HostError) is raised once the running calls end; the
    calls not started yet are dropped."""
    if len(items) <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    ex = ThreadPoolExecutor(max_workers=min(BOOTSTRAP_WORKERS, len(items)))
    futures = [ex.submit(fn, x) for x in items]
    try:
        return [f.result() for f in futures]
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


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


def _netns_id(path: Path) -> tuple[int, int] | None:
    """A network namespace's identity: the inode of its /run/netns mount or of /proc/PID/ns/net."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pids_in(spaces: list[str]) -> list[int]:
    """The processes in these namespaces, as `ip netns pids` finds them (the namespace inode of
    /proc/PID/ns/net against the /run/netns mount's), in one pass over /proc for all of them."""
    return _pids_in_ids({i for ns in spaces if (i := _netns_id(Path(f"/run/netns/{ns}"))) is not None})


def _pids_in_ids(want: set[tuple[int, int]]) -> list[int]:
    if not want:
        return []
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _netns_id(Path(f"/proc/{p}/ns/net")) in want]


def _kill_in(spaces: list[str]) -> None:
    """Stop every process in these namespaces (by pid) while all of them still exist, so the TCP
    sessions between nodes (BGP) close in both kernels rather than towards a peer already gone."""
    spaces = [ns for ns in spaces if Path(f"/run/netns/{ns}").exists()]
    pids = _pids_in(spaces)
    terminate(pids, 2.0 + 0.02 * len(pids), again=lambda: _pids_in(spaces))
