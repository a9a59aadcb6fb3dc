"""The read side without a lab: BIRD parsers on Calico's birdcl (BIRD 1.6) output, the route
protocol of the dataplane (Felix's 80 with VXLAN) on recorded `ip -j route`, node names, how each
provider reaches BIRD, and one home per read-side concept."""

import ast
import json
from pathlib import Path

import pytest

from conftest import ROOT
from labctl.live import bird, nodes
from labctl.live.nodes import NodeFacts, parse_probe
from labctl.observe import bgp
from labctl.plan.model import Node
from labctl.spec import calico

pytestmark = pytest.mark.unit

# `birdcl -s /var/run/calico/bird.ctl show protocols` inside calico-node (Calico v3.30, BIRD 1.6 fork)
BIRDCL_PROTOCOLS = """BIRD v0.3.3+birdv1.6.8 ready.
name     proto    table    state  since       info
static1  Static   master   up     2026-11-28
kernel1  Kernel   master   up     2026-11-28
device1  Device   master   up     2026-11-28
direct1  Direct   master   up     2026-11-28
Mesh_10_0_1_6 BGP      master   up     2026-11-28  Established
Mesh_10_0_2_9 BGP      master   start  09:14:51    Connect       Socket: Connection refused
"""

# `show protocols all` (one BGP block; BIRD 1.6 prints the route stats before the BGP state)
BIRDCL_PROTOCOLS_ALL = """BIRD v0.3.3+birdv1.6.8 ready.
name     proto    table    state  since       info
kernel1  Kernel   master   up     2026-11-28
  Preference:     10
  Input filter:   ACCEPT
  Output filter:  calico_kernel_programming
  Routes:         5 imported, 3 exported, 5 preferred
Mesh_10_0_1_6 BGP      master   up     2026-11-28  Established
  Description:    Connection to BGP peer
  Preference:     100
  Input filter:   ACCEPT
  Output filter:  calico_export_to_bgp_peers
  Routes:         1 imported, 1 exported, 1 preferred
  Route change stats:     received   rejected   filtered    ignored   accepted
    Import updates:              1          0          0          0          1
    Import withdraws:            0          0        ---          0          0
    Export updates:              4          1          2        ---          1
    Export withdraws:            0        ---        ---        ---          0
  BGP state:          Established
    Neighbor address: 10.0.1.6
    Neighbor AS:      64512
    Neighbor ID:      10.0.1.6
    Neighbor caps:    refresh enhanced-refresh restart-able llgr-aware AS4 add-path-rx add-path-tx
    Session:          internal multihop AS4 add-path-rx add-path-tx
    Source address:   10.0.1.5
    Hold timer:       195/240
    Keepalive timer:  4/80
Mesh_10_0_2_9 BGP      master   start  09:14:51    Connect       Socket: Connection refused
  Description:    Connection to BGP peer
  Preference:     100
  Input filter:   ACCEPT
  Output filter:  calico_export_to_bgp_peers
  Routes:         0 imported, 0 exported, 0 preferred
  BGP state:          Connect
    Neighbor address: 10.0.2.9
    Neighbor AS:      64512
    Last error:       Socket: Connection refused
"""

# `show route all`: BIRD 1.6 puts the next hop on the prefix line; (100/0) is preference/IGP metric
BIRDCL_ROUTES_ALL = """BIRD v0.3.3+birdv1.6.8 ready.
0.0.0.0/0          via 10.0.1.1 on ens5 [kernel1 2026-11-28] * (10)
\tType: inherit unicast univ
192.168.13.0/26    blackhole [static1 2026-11-28] * (200)
\tType: static unicast univ
192.168.77.0/26    via 10.0.1.6 on ens5 [Mesh_10_0_1_6 2026-11-28] * (100/0) [i]
\tType: BGP unicast univ
\tBGP.origin: IGP
\tBGP.as_path:
\tBGP.next_hop: 10.0.1.6
\tBGP.local_pref: 100
192.168.201.0/26   unreachable [Mesh_10_0_2_9 09:14:51 from 10.0.2.9] * (100/-) [i]
\tType: BGP unicast univ
\tBGP.origin: IGP
\tBGP.as_path:
\tBGP.next_hop: 10.0.2.9
\tBGP.local_pref: 100
"""

# `ip -j -4 route show` on a VXLAN node of a real Calico cluster: Felix's routes are protocol 80
FELIX_ROUTES = [
    {"dst": "default", "gateway": "10.0.1.1", "dev": "ens5", "protocol": "dhcp", "metric": 100, "flags": []},
    {"dst": "10.0.1.0/24", "dev": "ens5", "protocol": "kernel", "scope": "link", "flags": []},
    {"type": "blackhole", "dst": "192.168.13.0/26", "protocol": "80", "flags": []},
    {"dst": "192.168.13.1", "dev": "cali7a1b2c3d4e5", "scope": "link", "flags": []},
    {"dst": "192.168.77.0/26", "gateway": "192.168.77.0", "dev": "vxlan.calico", "protocol": "80", "flags": ["onlink"]},
]
# the same node with IPIP: BIRD programs the routes and the blackhole
BIRD_ROUTES = [
    {"type": "blackhole", "dst": "192.168.13.0/26", "protocol": "bird", "flags": []},
    {"dst": "192.168.77.0/26", "gateway": "10.0.1.6", "dev": "tunl0", "protocol": "bird", "flags": ["onlink"]},
]


def test_birdcl_show_protocols():
    s = bird.sessions(BIRDCL_PROTOCOLS)
    assert [(x.name, x.state, x.established) for x in s] == [
        ("Mesh_10_0_1_6", "up", True),
        ("Mesh_10_0_2_9", "start", False),
    ]
    assert bird.running(BIRDCL_PROTOCOLS)


def test_birdcl_show_protocols_all():
    a, b = bird.protocols_all(BIRDCL_PROTOCOLS_ALL)
    assert (a["name"], a["peer_address"], a["type"], a["bgp_state"], a["info"]) == (
        "Mesh_10_0_1_6",
        "10.0.1.6",
        "mesh",
        "Established",
        "Established",
    )
    assert (b["peer_address"], b["bgp_state"], b["last_error"]) == ("10.0.2.9", "Connect", "Socket: Connection refused")


def test_birdcl_show_route_all():
    r = {x["prefix"]: x for x in bird.routes(BIRDCL_ROUTES_ALL)}
    assert set(r) == {"0.0.0.0/0", "192.168.13.0/26", "192.168.77.0/26", "192.168.201.0/26"}
    learned = r["192.168.77.0/26"]
    assert (learned["kind"], learned["source"], learned["protocol"], learned["primary"]) == (
        "unicast",
        "BGP",
        "Mesh_10_0_1_6",
        True,
    )
    assert (learned["gateway"], learned["device"], learned["next_hop"], learned["preference"]) == (
        "10.0.1.6",
        "ens5",
        "10.0.1.6",
        100,
    )
    assert r["192.168.13.0/26"]["kind"] == "blackhole" and r["192.168.13.0/26"]["source"] == "static"
    assert r["192.168.201.0/26"]["kind"] == "unreachable" and r["192.168.201.0/26"]["next_hop"] == "10.0.2.9"


def probe_output(routes) -> str:
    return "\n".join(["=====labctl:route", json.dumps(routes), "=====labctl:bird", BIRDCL_PROTOCOLS])


@pytest.mark.parametrize(
    ("encapsulation", "routes", "block"),
    [
        ("VXLAN", FELIX_ROUTES, "192.168.13.0/26"),
        ("VXLANCrossSubnet", FELIX_ROUTES, "192.168.13.0/26"),
        ("IPIP", BIRD_ROUTES, "192.168.13.0/26"),
        ("IPIP", FELIX_ROUTES, ""),  # Felix does not program IPIP routes: a proto 80 blackhole is not ours
        ("VXLAN", BIRD_ROUTES, "192.168.13.0/26"),  # netns labs: labctl's BIRD plays Felix
    ],
)
def test_the_nodes_block_comes_from_the_dataplanes_route_protocol(encapsulation, routes, block):
    protocols = calico.dataplane_protocols(encapsulation, None)
    f = parse_probe(NodeFacts("n", "10.0.1.5", reachable=True), probe_output(routes), protocols)
    assert f.block == block


class FakeShell:
    """What a vm node answers: birdcl inside calico-node, Felix's routes in the kernel."""

    def __init__(self, lab_dir, node, timeout=3.0):
        self.node, self.commands = node, []

    def run(self, command, timeout=30.0):
        self.commands.append(command)
        if "birdcl" in command and command.endswith("show protocols all"):
            return 0, BIRDCL_PROTOCOLS_ALL, ""
        if "birdcl" in command and command.endswith("show route all"):
            return 0, BIRDCL_ROUTES_ALL, ""
        if command.startswith("ip -j -4 route show"):
            return 0, json.dumps(FELIX_ROUTES), ""
        return 127, "", f"unexpected {command}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_bgp_row_of_a_vm_node_through_birdcl_with_felix_routes(monkeypatch):
    from labctl.providers.vm import VmProvider

    monkeypatch.setattr(nodes, "NodeShell", FakeShell)
    node = {"name": "w1", "address": "10.0.1.5", "block": "192.168.13.0/26", "ssh": {"user": "ubuntu"}}
    node = Node.model_validate(node | {"role": "worker", "interface": "eth0"})
    birdc = VmProvider.birdc(None, node)
    assert birdc.startswith("sudo -n crictl exec $(sudo -n crictl ps -q --name calico-node")
    assert birdc.endswith("birdcl -s /var/run/calico/bird.ctl")
    row = bgp.node_row(Path("/nonexistent"), node, birdc, calico.dataplane_protocols("VXLAN", None))
    assert row["error"] == ""
    assert [(s["name"], s["peer_address"], s["bgp_state"]) for s in row["sessions"]] == [
        ("Mesh_10_0_1_6", "10.0.1.6", "Established"),
        ("Mesh_10_0_2_9", "10.0.2.9", "Connect"),
    ]
    learned = {r["prefix"]: r for r in row["routes"]}
    assert learned["192.168.77.0/26"]["kernel"] == "192.168.77.0/26 via 192.168.77.0 dev vxlan.calico onlink"
    assert learned["192.168.201.0/26"]["kernel"] == ""  # unreachable in BIRD, nothing in the kernel
    assert row["own_block"] == {"prefix": "192.168.13.0/26", "kind": "blackhole", "protocol": "static1"}


def _node(**kw) -> Node:
    base = {"name": "a", "role": "worker", "address": "10.0.0.1", "interface": "eth0", "block": "192.168.0.0/24"}
    return Node.model_validate(base | kw)


def test_netns_birdc_is_the_nodes_own_socket():
    from labctl.providers.netns.provider import NetnsProvider

    assert NetnsProvider.birdc(None, _node(bird_socket="/tmp/lc x/bird.ctl")) == "birdc -s '/tmp/lc x/bird.ctl'"


def test_getent_hosts_output_maps_names_and_aliases():
    out = "10.1.0.2        k8s-worker-1\n10.1.0.3        k8s-worker-2 w2\n"
    assert nodes.parse_names(out) == {"k8s-worker-1": "10.1.0.2", "k8s-worker-2": "10.1.0.3", "w2": "10.1.0.3"}


def test_probe_asks_for_names_neighbours_and_fdb():
    script = nodes.probe_script(_node(bird_socket="/s", dir="/d"), names=["b", "c"])
    assert "getent hosts b c" in script
    assert "ip -j -4 neigh show dev vxlan.calico" in script and "bridge -j fdb show dev vxlan.calico" in script


MODULES = {str(p.relative_to(ROOT / "labctl").with_suffix("")): p for p in (ROOT / "labctl").rglob("*.py")}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_private_name_of_another(module):
    tree = ast.parse(MODULES[module].read_text())
    private = [
        f"{n.module}.{a.name}"
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("labctl")
        for a in n.names
        if a.name.startswith("_")
        and not a.name.startswith("__")
        # a package's own private helpers are its modules' to share
        and n.module != "labctl." + module.rpartition("/")[0].replace("/", ".")
    ]
    # nodes.NodeShell's jump parsing is the access helper's to move (issue 9, node access)
    assert [p for p in private if p != "labctl.live.hostkeys._parse_jump"] == []


def test_one_bird_parser_and_one_route_formatter():
    """Issue 9 #5: the BIRD row regex, the ip-route-as-text formatter and the thread pool exist once."""
    texts = {m: p.read_text() for m, p in MODULES.items()}
    # the BIRD protocol row's last columns: "since" (a date, a time or both) and the info text
    assert [m for m, t in texts.items() if r"(\d\S*(?: \d\S*)?)" in t] == ["live/bird"]
    assert [m for m, t in texts.items() if "def route_line" in t] == ["live/iproute"]
    assert [m for m, t in texts.items() if "ThreadPoolExecutor" in t] == ["fanout"]
