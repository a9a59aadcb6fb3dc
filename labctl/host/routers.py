"""Lab routers (`networks:`): namespaces between the networks, read over SSH like nodes."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

from labctl import fanout
from labctl.errors import HostError, LabctlError
from labctl.host import birdrun, links, sh
from labctl.host.hostside import lan_mac, lan_neighbours, link_exists, terminate
from labctl.live import bird, iproute
from labctl.live import nodes as live
from labctl.plan.model import LabModel, Router, as_node
from labctl.spec import netem


def birdc(prov, node) -> str:
    """The shell command that talks to a speaker's BIRD (append a CLI command): a node's the provider's way
    (`prov.birdc`); a lab router's is a BIRD of this host in the router's namespace, whichever provider built
    it (netns, qemu), its control socket in the lab dir."""
    n = as_node(node)
    return f"birdc -s {shlex.quote(n.bird_socket)}" if n.role == "router" else prov.birdc(n)


def read(lab, r: Router) -> dict:
    """A lab router's kernel routes and, when it speaks BGP, its sessions (None: it runs no BIRD)."""
    try:
        with live.NodeShell(lab.dir, r) as s:
            _, out, _ = s.run("ip -j -4 route show")
            got = {"routes": iproute.loads(out), "sessions": None, "error": ""}
            _, tc, _ = s.run(netem.SHOW_ALL)
            got["impair"] = netem.describe_all(tc, r.interface)
            if r.asn is not None:
                _, out, _ = s.run(f"{birdc(None, r)} show protocols")
                got["sessions"] = bird.sessions(out) if bird.running(out) else []
            return got
    except LabctlError as e:
        return {"routes": [], "sessions": None, "error": str(e), "impair": None}


def read_all(lab, model: LabModel) -> dict:
    routers = model.routers or []
    return dict(zip([r.name for r in routers], fanout.each(lambda r: read(lab, r), routers), strict=True))


def inspect_row(r: Router, got: dict) -> dict:
    """A router as a row of `labctl inspect`: its interfaces and BGP, no tunnel, block or labels."""
    ok = not got["error"]
    sessions = got["sessions"] or []
    return {
        "name": r.name,
        "role": "router",
        "state": "running" if ok else "unreachable",
        "hostname": r.name if ok else None,
        "interface": ",".join(i.ifname for i in r.interfaces),
        "physical_ip": ",".join(f"{i.address}/{i.prefixlen}" for i in r.interfaces),
        "tunnel_device": "",
        "tunnel_ip": "",
        "block": "",
        "labels": {},
        "bgp": {
            "established": sum(1 for s in sessions if s.established) if ok else None,
            "expected": len(r.peers),
            "peers": [{"name": s.name, "state": s.state, "info": s.info, "since": s.since} for s in sessions],
        },
        "error": got["error"],
        "impair": got.get("impair"),
        "fault": "",  # `labctl fail` acts on nodes only
    }


# -- building them on this host (the netns and qemu providers) -------------------------------


def lan_members(model: LabModel, mac_of) -> dict[str, dict[str, str]]:
    """network -> address -> MAC of everything with a NIC on it: nodes (`mac_of(node)`: the provider's
    NIC MAC) and router interfaces (MACs derived from their addresses, as the bridges' are)."""
    out: dict[str, dict[str, str]] = {k: {} for k in model.networks or {}}
    for n in model.nodes:
        out[n.network][n.address] = mac_of(n)
    for r in model.routers or []:
        for i in r.interfaces:
            out[i.network][i.address] = lan_mac(i.address)
    return out


def ensure_bridges(model: LabModel, members: dict) -> None:
    """One bridge per network with an address of the host's on it, so SSH reaches every node directly;
    the host's permanent neighbour entries for what is on it. The host never forwards between them."""
    for netname, net in (model.networks or {}).items():
        br = links.ensure_bridge(net.bridge, net.host, ipaddress.IPv4Network(net.lan).prefixlen)
        host = lan_neighbours(None, br, members[netname], False)
        if host:
            sh.run(["ip", "-batch", "-"], input="\n".join(host) + "\n")


def build(model: LabModel, members: dict, netns_of, veth_of, checkpoint=lambda: None) -> None:
    """Each router as a namespace `netns_of(router)` with one NIC per network it joins, plugged into
    that network's bridge through the host's veth `veth_of(router, network)`, and forwarding on inside
    it only: the host's ip_forward stays 0 and nothing is NATed. Idempotent."""
    nets = model.networks or {}
    for r in model.routers or []:
        checkpoint()
        ns = netns_of(r.name)
        fresh = not Path(f"/run/netns/{ns}").exists()
        if fresh:
            sh.run(["ip", "netns", "add", ns])
        batch = ["link set lo up"]
        for i in r.interfaces:
            net = nets[i.network]
            veth = veth_of(r.name, i.network)
            nic, mac = i.ifname, lan_mac(i.address)
            if not link_exists(veth):
                sh.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", nic, "address", mac, "netns", ns])
            sh.run(["ip", "link", "set", veth, "master", net.bridge, "up"])
            batch += [f"addr replace {i.address}/{i.prefixlen} dev {nic}", f"link set {nic} up"]
            want = {a: m for a, m in members[i.network].items() if a != i.address}
            want[net.host] = lan_mac(net.host)
            batch += lan_neighbours(ns, nic, want, fresh)
        # networks behind another router (its connected networks are not passed on over BGP)
        batch += [f"route replace {x.lan} via {x.via} dev {x.dev}" for x in r.routes]
        sh.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch) + "\n")
        # the router forwards between its networks: in its own namespace only, never the host's
        sh.run(["nsenter", f"--net=/run/netns/{ns}", "sysctl", "-qw", "net.ipv4.ip_forward=1"])


def ensure_bird(lab_dir, model: LabModel, netns_of) -> list[str]:
    """BIRD in each router with an asn, started from this host inside the router's namespace `netns_of(router)`:
    the netns_bird role's bird-up.sh, as the netns provider's play runs it over SSH (start BIRD if it is not
    running, `birdc configure` when the rendered config changed). Its files are in the router's dir (config,
    pid file, log), its socket is the model's bird_socket. Returns the routers where something changed."""
    changed = []
    for r in model.routers or []:
        if r.asn is None:
            continue
        nd = Path(r.dir)
        nd.mkdir(parents=True, exist_ok=True, mode=0o700)
        script = birdrun.up_script(nd, r.bird_socket, lab_dir.bird_conf(r.name))
        p = sh.run(["nsenter", f"--net=/run/netns/{netns_of(r.name)}", "bash", "-c", script], check=False)
        if p.returncode != 0:
            err = (p.stderr or p.stdout).strip().splitlines()
            raise HostError(
                f"BIRD of router {r.name} did not start: {err[-1] if err else f'exit {p.returncode}'}",
                f"see {nd / 'bird.log'}",
            )
        if "CHANGED" in p.stdout:
            changed.append(r.name)
    return changed


def stop(routers: list[Router], netns_of, timeout: float = 3.0) -> list[int]:
    """End what runs in the routers' namespaces, by pid, while they still exist: BIRD (its pid file, if the
    process there still names the router's socket) and everything else the kernel places in the namespace
    (sshd and its sessions). Never by program name: another lab's BIRD is a `bird` too. Returns the pids
    that outlived SIGKILL."""
    pids: set[int] = set()
    for r in routers:
        pid = birdrun.running(r.dir, r.bird_socket) if r.dir and r.bird_socket else None
        if pid:
            pids.add(pid)
        ns = netns_of(r.name)
        if Path(f"/run/netns/{ns}").exists():
            pids |= {int(x) for x in sh.run(["ip", "netns", "pids", ns], check=False).stdout.split() if x.isdigit()}
    return terminate(pids, timeout)
