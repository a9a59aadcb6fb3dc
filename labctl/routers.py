"""Lab routers (`networks:`): namespaces between the networks, read over SSH like nodes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from labctl import bird, fanout, iproute, providers
from labctl import nodes as live
from labctl.errors import LabctlError
from labctl.model import LabModel, Router


def read(lab, r: Router) -> dict:
    """A lab router's kernel routes and, when it speaks BGP, its sessions (None: it runs no BIRD)."""
    prov = providers.get("netns")
    try:
        with live.NodeShell(lab.dir, r) as s:
            _, out, _ = s.run("ip -j -4 route show")
            got = {"routes": iproute.loads(out), "sessions": None, "error": ""}
            if r.asn is not None:
                _, out, _ = s.run(f"{prov.birdc(r)} show protocols")
                got["sessions"] = bird.sessions(out) if bird.running(out) else []
            return got
    except LabctlError as e:
        return {"routes": [], "sessions": None, "error": str(e)}


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
        "impair": None,
        "fault": "",  # `labctl fail` acts on nodes only
    }


# -- building them on this host (the netns and qemu providers) -------------------------------


def lan_members(data: dict, mac_of) -> dict[str, dict[str, str]]:
    """network -> address -> MAC of everything with a NIC on it: nodes (`mac_of(node)`: the provider's
    NIC MAC) and router interfaces (MACs derived from their addresses, as the bridges' are)."""
    from labctl.hostside import lan_mac

    out: dict[str, dict[str, str]] = {k: {} for k in data["networks"]}
    for n in data["nodes"]:
        out[n["network"]][n["address"]] = mac_of(n)
    for r in data.get("routers", []):
        for i in r["interfaces"]:
            out[i["network"]][i["address"]] = lan_mac(i["address"])
    return out


def ensure_bridges(data: dict, members: dict) -> None:
    """One bridge per network with an address of the host's on it, so SSH reaches every node directly;
    the host's permanent neighbour entries for what is on it. The host never forwards between them."""
    from labctl import sh
    from labctl.hostside import lan_mac, lan_neighbours, link_exists

    for netname, net in data["networks"].items():
        br, plen = net["bridge"], ipaddress.IPv4Network(net["lan"]).prefixlen
        if not link_exists(br):
            # a MAC of our own, or the bridge takes its lowest port's and the routers' entries go stale
            sh.run(["ip", "link", "add", br, "address", lan_mac(net["host"]), "type", "bridge"])
            sh.run(["ip", "addr", "add", f"{net['host']}/{plen}", "dev", br])
        sh.run(["ip", "link", "set", br, "up"])
        host = lan_neighbours(None, br, members[netname], False)
        if host:
            sh.run(["ip", "-batch", "-"], input="\n".join(host) + "\n")


def build(data: dict, members: dict, netns_of, veth_of, checkpoint=lambda: None) -> None:
    """Each router as a namespace `netns_of(router)` with one NIC per network it joins, plugged into
    that network's bridge through the host's veth `veth_of(router, network)`, and forwarding on inside
    it only: the host's ip_forward stays 0 and nothing is NATed. Idempotent."""
    from labctl import sh
    from labctl.hostside import lan_mac, lan_neighbours, link_exists

    nets = data["networks"]
    for r in data.get("routers", []):
        checkpoint()
        ns = netns_of(r["name"])
        fresh = not Path(f"/run/netns/{ns}").exists()
        if fresh:
            sh.run(["ip", "netns", "add", ns])
        batch = ["link set lo up"]
        for i in r["interfaces"]:
            net = nets[i["network"]]
            veth = veth_of(r["name"], i["network"])
            nic, mac = i["ifname"], lan_mac(i["address"])
            if not link_exists(veth):
                sh.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", nic, "address", mac, "netns", ns])
            sh.run(["ip", "link", "set", veth, "master", net["bridge"], "up"])
            batch += [f"addr replace {i['address']}/{i['prefixlen']} dev {nic}", f"link set {nic} up"]
            want = {a: m for a, m in members[i["network"]].items() if a != i["address"]}
            want[net["host"]] = lan_mac(net["host"])
            batch += lan_neighbours(ns, nic, want, fresh)
        # networks behind another router (its connected networks are not passed on over BGP)
        batch += [f"route replace {x['lan']} via {x['via']} dev {x['dev']}" for x in r.get("routes", [])]
        sh.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch) + "\n")
        # the router forwards between its networks: in its own namespace only, never the host's
        sh.run(["nsenter", f"--net=/run/netns/{ns}", "sysctl", "-qw", "net.ipv4.ip_forward=1"])
