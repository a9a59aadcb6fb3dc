"""The seed's second case: nodes in different networks behind a lab router (`networks:`, `routers:`),
CrossSubnet encapsulation, ToR peering, VXLAN routes from Felix. Validation here, then real two-rack
netns labs (LANs 10.140-10.146.x, labs rk-*), one per encapsulation/BGP design that teaches something."""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, host_snapshot, labctl, residue
from labctl.errors import TopologyError
from labctl.plan import names
from labctl.spec import schedule, topology


def racks(name="rk", octet=140, enc="IPIPCrossSubnet", bgp="tor", net_asn=True, router_asn=True, extra="") -> str:
    a = ", asn: 65001" if net_asn else ""
    b = ", asn: 65002" if net_asn else ""
    r = ", asn: 65000" if router_asn else ""
    layout = f"""
networks:
  rack-a: {{lan: 10.{octet}.1.0/24, gateway: 10.{octet}.1.254{a}}}
  rack-b: {{lan: 10.{octet}.2.0/24, gateway: 10.{octet}.2.254{b}}}
routers:
  core: {{interfaces: {{rack-a: 10.{octet}.1.254, rack-b: 10.{octet}.2.254}}{r}}}"""
    return seed_in_racks(name, octet, layout, enc, bgp) + extra


def seed_in_racks(name: str, octet: int, layout: str, enc: str, bgp: str) -> str:
    """The seed's three nodes and pods, master and worker-1 in rack-a, worker-2 in rack-b of `layout`."""
    return f"""
name: {name}{layout}
calico: {{encapsulation: {enc}, block_size: 24, bgp: {bgp}}}
defaults: {{interface: ens192}}
nodes:
  k8s-master:   {{role: control-plane, network: rack-a, address: 10.{octet}.1.1}}
  k8s-worker-1: {{role: worker, network: rack-a, address: 10.{octet}.1.2, labels: {{worker: no-1}}}}
  k8s-worker-2: {{role: worker, network: rack-b, address: 10.{octet}.2.3, labels: {{worker: no-2}}}}
workloads:
  - {{name: pod-a, node_selector: {{worker: no-1}}}}
  - {{name: pod-b, node_selector: {{worker: no-2}}}}
  - {{name: pod-m, node_selector: {{kubernetes.io/hostname: k8s-master}}}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyError) as e:
        topology.loads(text, "t.yml")
    return e.value.problems


# --- the contract and its validation (no host touched) ---------------------------------------


@pytest.mark.unit
def test_the_samples_and_the_seed_validate():
    for sample in ("two-racks", "vxlan-no-bgp", "seed"):
        t = topology.load(ROOT / "inventories" / sample / "topology.yml")
        assert t.nodes
    t = topology.loads(racks())
    assert t.calico.design == "tor" and t.lans["rack-a"].host.compressed == "10.140.1.253"
    assert schedule.plan(t).nodes[2].network == "rack-b"


@pytest.mark.unit
def test_network_and_networks_exclude_each_other():
    both = racks() + "network: {lan: 10.140.0.0/16}\n"
    assert any("network and networks are both set" in p for p in problems(both))
    neither = "name: x\nnodes:\n  a: {role: control-plane, address: 10.1.1.1}\n"
    assert any("network: is required" in p for p in problems(neither))


@pytest.mark.unit
def test_a_node_outside_its_network_or_without_one():
    p = problems(racks().replace("network: rack-b, address: 10.140.2.3", "network: rack-b, address: 10.140.1.9"))
    assert any("nodes.k8s-worker-2.address: 10.140.1.9 is not inside network rack-b 10.140.2.0/24" in x for x in p)
    p = problems(racks().replace("network: rack-b, ", ""))
    assert any("nodes.k8s-worker-2.network: is required with networks" in x for x in p)
    p = problems(racks().replace("network: rack-b, ", "network: rack-c, "))
    assert any("'rack-c' is not one of the networks" in x for x in p)
    # the host keeps the last address before the gateway on each bridge
    p = problems(racks().replace("address: 10.140.2.3", "address: 10.140.2.253"))
    assert any("is the host's address on rack-b" in x for x in p)


@pytest.mark.unit
def test_router_interfaces_and_reachability():
    p = problems(racks().replace("rack-b: 10.140.2.254", "rack-b: 10.140.9.254"))
    assert any("routers.core.interfaces.rack-b: 10.140.9.254 is not a host address of rack-b" in x for x in p)
    # a network no router joins: unreachable, and its gateway is nobody's
    lonely = racks().replace("rack-b: 10.140.2.254}", "}").replace(", rack-b: 10.140.2.254", "")
    p = problems(lonely)
    assert any("networks.rack-b: no router joins rack-b to rack-a" in x for x in p), p
    assert any("networks.rack-b.gateway: 10.140.2.254 is no router's interface" in x for x in p)


@pytest.mark.unit
def test_bgp_designs_need_what_they_use():
    p = problems(racks(net_asn=False, router_asn=False))
    assert any("networks.rack-a.asn: bgp: tor needs the AS" in x for x in p)
    assert any("routers.core.asn: bgp: tor needs an asn on every router" in x for x in p)
    p = problems(racks(enc="IPIP", bgp="none"))
    assert any("calico.bgp: bgp: none with encapsulation IPIP" in x and "VXLAN" in x for x in p)
    p = problems(racks(bgp="reflectors"))
    assert any("reflectors needs calico.route_reflectors" in x for x in p)


@pytest.mark.unit
def test_one_lan_refuses_router_fields():
    seed = (ROOT / "inventories" / "seed" / "topology.yml").read_text()
    p = problems(seed.replace("asn: 64512", "asn: 64512\n  bgp: tor"))
    assert any("tor needs networks and routers" in x for x in p)
    p = problems(seed.replace("address: 10.12.22.3,", "address: 10.12.22.3, network: rack-a,"))
    assert any("nodes.k8s-worker-2.network: a node network needs networks:" in x for x in p)


@pytest.mark.unit
def test_vm_and_qemu_labs_take_networks():
    """vm: the racks and routers exist; labctl renders Calico's side. qemu: labctl makes the VMs' bridges
    and builds the routers itself (builds_routers; tests/test_qemu_racks.py)."""
    t = topology.load(ROOT / "inventories" / "two-racks-vm" / "topology.yml")
    assert t.provider == "vm" and t.calico.design == "tor" and set(t.lans) == {"rack-a", "rack-b"}
    assert topology.loads(racks() + "provider: vm\n").provider == "vm"
    assert topology.loads(racks() + "provider: qemu\n").provider == "qemu"


@pytest.mark.unit
def test_validate_cli_exit_2_one_line_per_problem(tmp_path):
    f = tmp_path / "t.yml"
    f.write_text(racks(net_asn=False, router_asn=False))
    p = labctl("validate", "-t", f)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len([x for x in lines if "asn" in x]) == 3, p.stderr


@pytest.mark.unit
def test_render_ccross_subnet_kernel_routes_and_tor_sessions(tmp_path):
    f = tmp_path / "t.yml"
    f.write_text(racks(name="rk-render"))
    labctl("render", "-t", f, "-o", tmp_path / "lab", check=True)
    master = (tmp_path / "lab" / "bird" / "k8s-master.conf").read_text()
    # worker-1 shares rack-a: native; worker-2 is behind the router: encapsulated
    assert "if net = 192.168.1.0/24 then { accept; }" in master
    assert 'if net = 192.168.2.0/24 then { ifname = "tunl0"; onlink = true; gw = 10.140.2.3; accept; }' in master
    assert "local 10.140.1.1 as 65001;" in master and "neighbor 10.140.1.254 as 65000;" in master
    core = (tmp_path / "lab" / "bird" / "core.conf").read_text()
    assert core.count("local 10.140.1.254 as 65000;") == 2 and "neighbor 10.140.2.3 as 65002;" in core
    for conf in (master, core):
        (tmp_path / "c.conf").write_text(conf)
        assert subprocess.run(["bird", "-p", "-c", tmp_path / "c.conf"], capture_output=True).returncode == 0
    data = json.loads((tmp_path / "lab" / "topology-data.json").read_text())
    bridges = {n["bridge"] for n in data["networks"].values()}
    assert len(bridges) == 2 and all(len(b) <= 15 for b in bridges)
    assert {n["ssh"]["bridge"] for n in data["nodes"]} == bridges


# --- real two-rack labs ----------------------------------------------------------------------


class Lab:
    def __init__(self, text: str, name: str):
        self.home = Path(tempfile.mkdtemp(prefix="lc", dir="/tmp"))
        self.name = name
        self.file = self.home / "t.yml"
        self.file.write_text(text)
        self.before = host_snapshot(self.home)

    def __enter__(self):
        self.up = labctl("up", "-t", self.file, home=self.home)
        assert self.up.returncode == 0, self.up.stdout + self.up.stderr
        return self

    def run(self, *args, check=True):
        return labctl(*args, home=self.home, check=check)

    def verify(self) -> dict:
        p = self.run("verify", "--format", "json", "--wait", "5", check=False)
        return {"rc": p.returncode, "checks": {(c["check"], c["target"]): c for c in json.loads(p.stdout)}}

    def routes(self, node: str) -> str:
        return self.run("exec", node, "--", "ip", "-4", "route").stdout

    def __exit__(self, *exc):
        try:
            down = labctl("down", "--name", self.name, home=self.home)
            assert down.returncode == 0, down.stderr
            # only this lab's things: other labs may come and go on a shared host meanwhile
            mark = (
                f"lc-{self.name}.",
                f"lc{names.lab_id('lc', self.name)}",
                f"br-lc{names.lab_id('lc', self.name)}",
                str(self.home),
            )
            left = residue(self.before, host_snapshot(self.home))
            left = {k: {x for x in v if any(m in str(x) for m in mark)} for k, v in left.items()}
            assert not any(left.values()), left
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


def _forwarding(ns: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True)
    return out.stdout.decode().strip()


@pytest.mark.netns
def test_rk_ipip_cross_subnet_with_tor():
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    with Lab(racks(name="rk-tor", octet=140), "rk-tor") as lab:
        v = lab.verify()
        assert v["rc"] == 0, v
        assert v["checks"][("bgp", "core")]["detail"] == "3/3 Established"
        assert v["checks"][("ping", "pod-a->pod-b")]["ok"]
        # the router learned every block over eBGP and routes them itself
        core = lab.routes("core")
        for block, via in (("192.168.0.0/24", "10.140.1.1"), ("192.168.2.0/24", "10.140.2.3")):
            assert f"{block} via {via} dev " in core and "proto bird" in core, core
        assert _forwarding("lc-rk-tor.core") == "1" and _forwarding("lc-rk-tor.k8s-master") == "1"
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == host_forward
        # a node's way out is its rack's router, never the host
        assert "default via 10.140.1.254 dev ens192" in lab.routes("k8s-worker-1")
        # across racks: encapsulated (IPIP emulated on vxlan.calico), through core
        t = lab.run("trace", "pod-a", "pod-b", "--format", "json")
        hops = json.loads(t.stdout)["hops"]
        assert any(h["at"] == "core" and h["kind"] == "router" for h in hops), t.stdout
        assert any(h["kind"] == "encap" for h in hops)
        route = next(h for h in hops if h["kind"] == "route" and h["at"] == "k8s-worker-1")
        assert "other subnet (rack-b" in route["why"] and "IPIP emulated on vxlan.calico" in route["why"]
        assert json.loads(t.stdout)["reached"] and json.loads(t.stdout)["ping"]["ok"]
        # inside a rack: native, no tunnel
        t = json.loads(lab.run("trace", "pod-a", "pod-m", "--format", "json").stdout)
        assert not any(h["kind"] == "encap" for h in t["hops"]) and t["reached"]
        route = next(h for h in t["hops"] if h["kind"] == "route" and h["at"] == "k8s-worker-1")
        assert "same subnet (rack-a): native under IPIPCrossSubnet" in route["why"]
        rows = {r["name"]: r for r in json.loads(lab.run("inspect", "--format", "json").stdout)}
        assert rows["core"]["role"] == "router" and rows["core"]["physical_ip"] == "10.140.1.254/24,10.140.2.254/24"
        assert rows["core"]["bgp"]["established"] == 3 and rows["k8s-worker-2"]["bgp"]["established"] == 1
        assert lab.run("exec", "core", "--", "hostname").stdout.strip() == "core"
        graph = lab.run("graph", "--format", "mermaid").stdout
        assert 'lan0(("rack-a 10.140.1.0/24"))' in graph and 'lan1(("rack-b 10.140.2.0/24"))' in graph
        assert "lan0 --- n3" in graph and "lan1 --- n3" in graph  # core, the fourth row, sits on both
        bgp = json.loads(lab.run("bgp", "core", "--format", "json").stdout)[0]
        assert {s["peer_node"] for s in bgp["sessions"]} == {"k8s-master", "k8s-worker-1", "k8s-worker-2"}
        assert {s["peer_as"] for s in bgp["sessions"]} == {"65001", "65002"}
        assert len(bgp["routes"]) == 3
        again = lab.run("up", "-t", lab.file)
        assert " changed " not in again.stderr, again.stderr


@pytest.mark.netns
def test_rk_vxlan_without_bgp_felix_programs_the_routes():
    with Lab(racks(name="rk-vx", octet=141, enc="VXLAN", bgp="none", net_asn=False, router_asn=False), "rk-vx") as lab:
        v = lab.verify()
        assert v["rc"] == 0, v
        assert "no BGP" in v["checks"][("bgp", "k8s-master")]["detail"]
        master = lab.routes("k8s-master")
        assert "192.168.2.0/24 via 192.168.2.1 dev vxlan.calico proto 80 onlink" in master, master
        assert "192.168.1.0/24 via 192.168.1.1 dev vxlan.calico proto 80 onlink" in master, master
        assert "blackhole 192.168.0.0/24 proto 80" in master and "proto bird" not in master
        assert not (lab.home / "rk-vx" / "nodes" / "k8s-master" / "bird.pid").exists()
        assert "192.168." not in lab.routes("core")  # the router knows no pod block, and needs none
        t = json.loads(lab.run("trace", "pod-a", "pod-b", "--format", "json").stdout)
        route = next(h for h in t["hops"] if h["kind"] == "route" and h["at"] == "k8s-worker-1")
        assert "Felix programmed it (proto 80)" in route["why"] and "learned over BGP" not in route["why"]
        assert t["reached"] and t["ping"]["ok"]


@pytest.mark.netns
def test_rk_vxlan_cross_subnet_with_mesh():
    with Lab(racks(name="rk-vxcs", octet=142, enc="VXLANCrossSubnet", bgp="mesh"), "rk-vxcs") as lab:
        v = lab.verify()
        assert v["rc"] == 0, v
        assert v["checks"][("bgp", "k8s-worker-2")]["detail"] == "2/2 Established"  # iBGP mesh through core
        master = lab.routes("k8s-master")
        assert "192.168.1.0/24 via 10.142.1.2 dev ens192 proto 80" in master, master  # same rack: native
        assert "192.168.2.0/24 via 192.168.2.1 dev vxlan.calico proto 80 onlink" in master, master


@pytest.mark.netns
def test_rk_ipip_with_a_reflector_in_the_other_rack():
    """IPIP encapsulates inside a rack too; the clients' iBGP sessions to the reflector cross the router."""
    rr = racks(name="rk-rr", octet=145, enc="IPIP", bgp="reflectors", net_asn=False, router_asn=False)
    rr = rr.replace("bgp: reflectors}", "bgp: reflectors, route_reflectors: [k8s-worker-2]}")
    with Lab(rr, "rk-rr") as lab:
        v = lab.verify()
        assert v["rc"] == 0, v
        assert v["checks"][("bgp", "k8s-worker-2")]["detail"] == "2/2 Established"  # the reflector: both clients
        assert v["checks"][("bgp", "k8s-master")]["detail"] == "1/1 Established"  # a client: the reflector only
        bgp = json.loads(lab.run("bgp", "k8s-master", "--format", "json").stdout)[0]
        assert [s["peer_node"] for s in bgp["sessions"]] == ["k8s-worker-2"]
        # k8s-worker-1's block, same rack, reflected from rack-b, still goes through the tunnel: plain IPIP
        master = lab.routes("k8s-master")
        assert "192.168.1.0/24 via 192.168.1.1 dev vxlan.calico proto bird" in master, master
        t = json.loads(lab.run("trace", "pod-a", "pod-m", "--format", "json").stdout)
        assert any(h["kind"] == "encap" for h in t["hops"]) and t["reached"]
        assert not any(h["kind"] == "router" for h in t["hops"])  # same rack: the router is not on the way
        route = next(h for h in t["hops"] if h["kind"] == "route" and h["at"] == "k8s-worker-1")
        assert "learned over BGP from k8s-worker-2 (session Node_10_145_2_3" in route["why"], route["why"]
        assert "= k8s-master: k8s-worker-2 reflected k8s-master's route" in route["why"], route["why"]


@pytest.mark.netns
def test_rk_vxlan_with_tor_bgp_carries_blocks_felix_programs_routes():
    """VXLAN with ToR BGP: the router learns every block over eBGP, while the nodes' routes come from
    Felix (proto 80) and BIRD programs nothing, as with Calico's BIRD rejecting VXLAN pools."""
    with Lab(racks(name="rk-vxt", octet=146, enc="VXLAN", bgp="tor"), "rk-vxt") as lab:
        v = lab.verify()
        assert v["rc"] == 0, v
        assert v["checks"][("bgp", "core")]["detail"] == "3/3 Established"
        master = lab.routes("k8s-master")
        assert "192.168.1.0/24 via 192.168.1.1 dev vxlan.calico proto 80 onlink" in master, master
        assert "192.168.2.0/24 via 192.168.2.1 dev vxlan.calico proto 80 onlink" in master, master
        assert "proto bird" not in master, master
        core = lab.routes("core")
        assert "192.168.0.0/24 via 10.146.1.1" in core and "192.168.2.0/24 via 10.146.2.3" in core, core
        t = json.loads(lab.run("trace", "pod-a", "pod-b", "--format", "json").stdout)
        route = next(h for h in t["hops"] if h["kind"] == "route" and h["at"] == "k8s-worker-1")
        assert "Felix programmed it (proto 80)" in route["why"], route["why"]
        assert [h["at"] for h in t["hops"] if h["kind"] == "router"] == ["core"] and t["reached"] and t["ping"]["ok"]


@pytest.mark.netns
def test_rk_no_encapsulation_needs_the_router_to_know_the_blocks():
    with Lab(racks(name="rk-none", octet=143, enc="None", bgp="tor"), "rk-none") as lab:
        v = lab.verify()
        assert v["rc"] == 0, v
        assert v["checks"][("router-routes", "core")]["ok"]
        t = json.loads(lab.run("trace", "pod-a", "pod-b", "--format", "json").stdout)
        assert [h["at"] for h in t["hops"] if h["kind"] == "router"] == ["core"] and t["reached"]
    with Lab(racks(name="rk-nomesh", octet=144, enc="None", bgp="mesh", net_asn=False), "rk-nomesh") as lab:
        v = lab.verify()
        assert v["rc"] == 1
        rr = v["checks"][("router-routes", "core")]
        assert not rr["ok"] and rr["detail"].startswith("core has no route to 192.168.0.0/24 (k8s-master)")
        assert "192.168.2.0/24 (k8s-worker-2)" in rr["detail"]
        assert "only bgp: tor" in rr["detail"]
        assert not v["checks"][("ping", "pod-a->pod-b")]["ok"]
        assert v["checks"][("ping", "pod-a->pod-m")]["ok"]  # same rack: no router on the way


@pytest.mark.unit
def test_bgp_none_disables_calico_bgp_in_the_operator_resources(tmp_path):
    seed = (ROOT / "inventories" / "seed" / "topology.yml").read_text()
    f = tmp_path / "t.yml"
    f.write_text(seed.replace("encapsulation: IPIP ", "encapsulation: VXLAN ").replace("asn: 64512", "bgp: none"))
    labctl("render", "-t", f, "-o", tmp_path / "lab", check=True)
    assert "    bgp: Disabled\n" in (tmp_path / "lab" / "calico" / "custom-resources.yaml").read_text()
    data = json.loads((tmp_path / "lab" / "topology-data.json").read_text())
    assert data["calico"]["bgp"] == "none" and data["calico"]["felix"] is True
    assert all(n["peers"] == [] for n in data["nodes"])
    master = data["nodes"][0]
    assert master["felix_routes"][0] == "blackhole 192.168.0.0/24 proto 80"
    assert "192.168.1.0/24 via 192.168.1.1 dev vxlan.calico onlink proto 80" in master["felix_routes"]


# --- two routers: rack-a -- r1 -- transit -- r2 -- rack-b (LANs 10.185-10.186) -----------------------


def two_routers(name: str, octet: int, enc: str, bgp: str) -> str:
    asn = bgp == "tor"
    a, b = (", asn: 65001", ", asn: 65002") if asn else ("", "")
    r1, r2 = (", asn: 65000", ", asn: 65100") if asn else ("", "")
    layout = f"""
networks:
  rack-a: {{lan: 10.{octet}.1.0/24, gateway: 10.{octet}.1.254{a}}}
  transit: {{lan: 10.{octet}.0.0/24, gateway: 10.{octet}.0.1}}
  rack-b: {{lan: 10.{octet}.2.0/24, gateway: 10.{octet}.2.254{b}}}
routers:
  r1: {{interfaces: {{rack-a: 10.{octet}.1.254, transit: 10.{octet}.0.1}}{r1}}}
  r2: {{interfaces: {{transit: 10.{octet}.0.2, rack-b: 10.{octet}.2.254}}{r2}}}"""
    return seed_in_racks(name, octet, layout, enc, bgp)


@pytest.mark.unit
def test_routers_route_to_networks_behind_other_routers(tmp_path):
    """Routers pass on only BGP-learned routes: a network two routers away needs a static route
    through the neighbour router, breadth first (fewest routers)."""
    f = tmp_path / "t.yml"
    f.write_text(two_routers("rk2r-render", 185, "IPIPCrossSubnet", "tor"))
    labctl("render", "-t", f, "-o", tmp_path / "lab", check=True)
    data = json.loads((tmp_path / "lab" / "topology-data.json").read_text())
    routes = {r["name"]: r["routes"] for r in data["routers"]}
    assert routes == {
        "r1": [{"lan": "10.185.2.0/24", "via": "10.185.0.2", "dev": "transit"}],
        "r2": [{"lan": "10.185.1.0/24", "via": "10.185.0.1", "dev": "transit"}],
    }
    r1 = (tmp_path / "lab" / "bird" / "r1.conf").read_text()
    assert "neighbor 10.185.0.2 as 65100;" in r1 and "local 10.185.0.1 as 65000;" in r1


@pytest.mark.netns
def test_rk_two_routers_tor_ipip_cross_subnet():
    with Lab(two_routers("rk2r-tor", 185, "IPIPCrossSubnet", "tor"), "rk2r-tor") as lab:
        v = lab.verify()
        assert v["rc"] == 0, v
        assert v["checks"][("bgp", "r1")]["detail"] == "3/3 Established"  # two nodes and r2
        assert v["checks"][("bgp", "r2")]["detail"] == "2/2 Established"  # one node and r1
        # r1 learned rack-b's block from r2 (eBGP: next hop r2), and routes rack-b's LAN through r2
        r1 = lab.routes("r1")
        assert "192.168.2.0/24 via 10.185.0.2 dev transit proto bird" in r1, r1
        assert "10.185.2.0/24 via 10.185.0.2 dev transit" in r1, r1
        t = json.loads(lab.run("trace", "pod-a", "pod-b", "--format", "json").stdout)
        assert [h["at"] for h in t["hops"] if h["kind"] == "router"] == ["r1", "r2"], t
        assert any(h["kind"] == "encap" for h in t["hops"]) and t["reached"] and t["ping"]["ok"]
        print(lab.run("trace", "pod-a", "pod-b").stdout)  # for -rP: the README's walk across two routers
        back = json.loads(lab.run("trace", "pod-b", "pod-a", "--format", "json").stdout)
        assert [h["at"] for h in back["hops"] if h["kind"] == "router"] == ["r2", "r1"] and back["reached"]


@pytest.mark.netns
def test_rk_two_routers_mesh_vxlan_cross_subnet():
    with Lab(two_routers("rk2r-vx", 186, "VXLANCrossSubnet", "mesh"), "rk2r-vx") as lab:
        v = lab.verify()
        assert v["rc"] == 0, v
        assert v["checks"][("bgp", "k8s-worker-2")]["detail"] == "2/2 Established"  # the mesh, across two routers
        master = lab.routes("k8s-master")
        assert "192.168.1.0/24 via 10.186.1.2 dev ens192 proto 80" in master, master  # same rack: native
        assert "192.168.2.0/24 via 192.168.2.1 dev vxlan.calico proto 80 onlink" in master, master
        t = json.loads(lab.run("trace", "pod-a", "pod-b", "--format", "json").stdout)
        assert [h["at"] for h in t["hops"] if h["kind"] == "router"] == ["r1", "r2"], t
        assert t["reached"] and t["ping"]["ok"]


# --- reconcile: a node into a network, then a whole network, in place (LANs 10.181.x) ------------------


def _ns_inode(lab: str, node: str) -> int:
    return Path(f"/run/netns/lc-{lab}.{node}").stat().st_ino


def _identity(lab: Lab, names: list[str]) -> dict:
    """What must survive an in-place change: each namespace (its inode), its sshd and BIRD."""
    state = json.loads((lab.home / lab.name / "state.json").read_text())
    out = {}
    for n in names:
        bird = (lab.home / lab.name / "nodes" / n / "bird.pid").read_text().strip()
        out[n] = (_ns_inode(lab.name, n), state["pids"]["sshd"][n], bird)
    return out


@pytest.mark.netns
def test_rk_adding_a_node_then_a_network_touches_nobody_else():
    name = "rk-grow"
    text = racks(name=name, octet=181)
    with Lab(text, name) as lab:
        old = ["k8s-master", "k8s-worker-1", "k8s-worker-2", "core"]
        before = _identity(lab, old)
        # a node into rack-b
        text = (
            text.replace(
                "workloads:",
                "  k8s-worker-4: {role: worker, network: rack-b, address: 10.181.2.5, labels: {worker: no-4}}\nworkloads:",
            ).rstrip()
            + "\n  - {name: pod-d, node_selector: {worker: no-4}}\n"
        )
        lab.file.write_text(text)
        up = lab.run("up", "-t", lab.file)
        # IPIP emulated on vxlan.calico: every node's VTEP table gains the new one, only its sessions are waited on
        assert "+ node k8s-worker-4" in up.stderr and "wait       k8s-worker-4\n" in up.stderr, up.stderr
        assert _identity(lab, old) == before
        # a whole network: its bridge, core's interface in it, a node there
        text = text.replace(
            "  rack-b: {lan: 10.181.2.0/24",
            "  rack-c: {lan: 10.181.3.0/24, gateway: 10.181.3.254, asn: 65003}\n  rack-b: {lan: 10.181.2.0/24",
        )
        text = text.replace("rack-b: 10.181.2.254}", "rack-b: 10.181.2.254, rack-c: 10.181.3.254}")
        text = (
            text.replace(
                "workloads:",
                "  k8s-worker-3: {role: worker, network: rack-c, address: 10.181.3.4, labels: {worker: no-3}}\nworkloads:",
            ).rstrip()
            + "\n  - {name: pod-c, node_selector: {worker: no-3}}\n"
        )
        lab.file.write_text(text)
        dry = lab.run("up", "-t", lab.file, "--dry-run")
        assert "+ network rack-c: 10.181.3.0/24" in dry.stdout + dry.stderr
        up = lab.run("up", "-t", lab.file)
        assert "~ router core: + rack-c 10.181.3.254" in up.stderr, up.stderr
        assert _identity(lab, old) == before, "namespaces, sshd and BIRD of the others are the same"
        v = lab.verify()
        assert v["rc"] == 0, v
        assert v["checks"][("bgp", "core")]["detail"] == "5/5 Established"
        for pod in ("pod-c", "pod-d"):
            t = json.loads(lab.run("trace", "pod-a", pod, "--format", "json").stdout)
            assert [h["at"] for h in t["hops"] if h["kind"] == "router"] == ["core"] and t["reached"], t
            assert t["ping"]["ok"]
        assert "10.181.3.0/24 dev rack-c" in lab.routes("core")
