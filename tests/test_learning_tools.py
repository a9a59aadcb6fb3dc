"""labctl.observe.bgp, labctl.observe.trace and labctl.observe.graph_svg: parsers against BIRD 2.0.12 output captured from a
live lab, the SVG as XML, and one live lab ("lctools" on 10.88.0.0/16, so it never meets other tests'
labs) read by all three tools."""

import xml.etree.ElementTree as ET

import pytest

from conftest import lab_model, real_lab, renumbered, write_yaml
from labctl.observe import bgp, graph_svg, trace

# `birdc show protocols all` on k8s-worker-1 of a running lab (cut after the first BGP session's
# block: the second one is the same shape)
PROTOCOLS_ALL = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     19:56:18.915

direct1    Direct     ---        up     19:56:18.915
  Channel ipv4
    State:          UP
    Table:          master4
    Preference:     240
    Input filter:   ACCEPT
    Output filter:  REJECT
    Routes:         1 imported, 0 exported, 1 preferred

blocks     Static     master4    up     19:56:18.915
  Channel ipv4
    State:          UP
    Table:          master4

Mesh_10_88_22_1 BGP        ---        up     19:56:19.650  Established
  Description:    node-to-node mesh: k8s-master
  BGP state:          Established
    Neighbor address: 10.88.22.1
    Neighbor AS:      64512
    Local AS:         64512
    Neighbor ID:      10.88.22.1
    Local capabilities
      Multiprotocol
        AF announced: ipv4
      Route refresh
    Session:          internal multihop AS4
    Source address:   10.88.22.2
    Hold timer:       206.505/240
    Keepalive timer:  58.406/80
  Channel ipv4
    State:          UP
    Table:          master4
    Preference:     100
    Input filter:   ACCEPT
    Output filter:  calico_export_to_bgp_peers
    Routes:         1 imported, 1 exported, 1 preferred
    BGP Next hop:   10.88.22.2
    IGP IPv4 table: master4

Mesh_10_88_22_3 BGP        ---        start  19:57:05.629  Active        Socket: Connection reset by peer
  Description:    node-to-node mesh: k8s-worker-2
  BGP state:          Active
    Neighbor address: 10.88.22.3
    Neighbor AS:      64512
    Local AS:         64512
    Connect delay:    0.220/1
    Last error:       Socket: Connection reset by peer
  Channel ipv4
    State:          DOWN
"""

# `birdc show protocols` on k8s-worker-2 while its session to k8s-worker-1 was disabled
PROTOCOLS = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     19:56:18.849
direct1    Direct     ---        up     19:56:18.849
blocks     Static     master4    up     19:56:18.849
kernel1    Kernel     master4    up     19:56:18.849
Mesh_10_88_22_1 BGP        ---        up     19:56:19.558  Established
Mesh_10_88_22_2 BGP        ---        down   19:57:05.628
"""

# `birdc show route all` on k8s-worker-1 (tab-indented attribute lines, as BIRD prints them)
ROUTES_ALL = """BIRD 2.0.12 ready.
Table master4:
192.168.0.0/24       unicast [Mesh_10_88_22_1 19:56:19.791] * (100) [i]
\tvia 10.88.22.1 on ens192
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path:
\tBGP.next_hop: 10.88.22.1
\tBGP.local_pref: 100
192.168.1.0/24       blackhole [blocks 19:56:18.915] * (200)
\tType: static univ
192.168.2.0/24       unicast [Mesh_10_88_22_3 19:56:20.119] * (100) [i]
\tvia 10.88.22.3 on ens192
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path:
\tBGP.next_hop: 10.88.22.3
\tBGP.local_pref: 100
10.88.0.0/16         unicast [direct1 19:56:18.916] * (240)
\tdev ens192
\tType: device univ
"""

# the same prefix learned twice (a second, non-best route starts with spaces, not the prefix)
ROUTES_TWO_PATHS = """Table master4:
192.168.2.0/24       unicast [Mesh_10_88_22_3 19:56:20.119] * (100) [i]
\tvia 10.88.22.3 on ens192
\tType: BGP univ
\tBGP.next_hop: 10.88.22.3
                     unicast [Node_10_88_22_9 19:58:01.000] (100) [i]
\tvia 10.88.22.9 on ens192
\tType: BGP univ
\tBGP.next_hop: 10.88.22.9
"""


@pytest.mark.unit
def test_parse_protocols_all_sessions():
    s = bgp.parse_protocols_all(PROTOCOLS_ALL)
    assert [x["name"] for x in s] == ["Mesh_10_88_22_1", "Mesh_10_88_22_3"]  # BGP only
    up, down = s
    assert up["peer_address"] == "10.88.22.1" and up["type"] == "mesh"
    assert (up["state"], up["since"], up["info"], up["bgp_state"]) == (
        "up",
        "19:56:19.650",
        "Established",
        "Established",
    )
    assert up["description"] == "node-to-node mesh: k8s-master"
    assert (down["state"], down["bgp_state"], down["peer_address"]) == ("start", "Active", "10.88.22.3")
    assert down["info"] == "Active        Socket: Connection reset by peer"
    assert down["last_error"] == "Socket: Connection reset by peer"


@pytest.mark.unit
def test_parse_plain_protocols_takes_peer_from_calico_name():
    s = bgp.parse_protocols_all(PROTOCOLS)
    assert [(x["name"], x["peer_address"], x["state"], x["info"]) for x in s] == [
        ("Mesh_10_88_22_1", "10.88.22.1", "up", "Established"),
        ("Mesh_10_88_22_2", "10.88.22.2", "down", ""),
    ]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "description", "kind"),
    [("Mesh_10_12_22_2", "", "mesh"), ("Node_10_12_0_9", "", "peer"), ("Global_10_0_0_1", "route reflector", "rr")],
)
def test_session_type(name, description, kind):
    assert bgp.session_type(name, description) == kind


@pytest.mark.unit
def test_parse_routes_all():
    r = {x["prefix"]: x for x in bgp.parse_routes(ROUTES_ALL)}
    assert set(r) == {"192.168.0.0/24", "192.168.1.0/24", "192.168.2.0/24", "10.88.0.0/16"}
    b = r["192.168.2.0/24"]
    assert (b["source"], b["protocol"], b["next_hop"], b["gateway"], b["device"]) == (
        "BGP",
        "Mesh_10_88_22_3",
        "10.88.22.3",
        "10.88.22.3",
        "ens192",
    )
    assert b["primary"] and b["preference"] == 100 and b["kind"] == "unicast"
    own = r["192.168.1.0/24"]
    assert (own["kind"], own["protocol"], own["source"], own["next_hop"]) == ("blackhole", "blocks", "static", "")
    lan = r["10.88.0.0/16"]
    assert (lan["source"], lan["device"], lan["next_hop"]) == ("device", "ens192", "")


@pytest.mark.unit
def test_parse_routes_second_path_keeps_prefix():
    a, b = bgp.parse_routes(ROUTES_TWO_PATHS)
    assert a["prefix"] == b["prefix"] == "192.168.2.0/24"
    assert (a["primary"], b["primary"]) == (True, False)
    assert (b["protocol"], b["next_hop"]) == ("Node_10_88_22_9", "10.88.22.9")


@pytest.mark.unit
def test_bgp_table_format():
    row = {
        "node": "n1",
        "address": "10.0.0.1",
        "block": "192.168.1.0/24",
        "error": "",
        "own_block": {"prefix": "192.168.1.0/24", "kind": "blackhole", "protocol": "blocks"},
        "sessions": bgp.parse_protocols_all(PROTOCOLS_ALL),
        "routes": [x | {"kernel": ""} for x in bgp.parse_routes(ROUTES_ALL) if x["source"] == "BGP"],
    }
    out = bgp.format([row, {**row, "node": "n2", "error": "ssh n2: timeout"}], "table")
    assert "Mesh_10_88_22_3  10.88.22.3  mesh  start" in out
    assert "192.168.2.0/24" in out
    # issue 15 #12: the error itself goes to stderr (the CLI prints it), the data stays here
    assert "ssh n2: timeout" not in out and "n2 (10.0.0.1)" in out and "not read" in out


MODEL = lab_model(
    [
        {
            "name": "m",
            "role": "control-plane",
            "address": "10.88.22.1",
            "block": "192.168.0.0/24",
            "tunnel_ip": "192.168.0.1",
            "peers": [{"name": "w1", "address": "10.88.22.2", "protocol": "Mesh_10_88_22_2", "type": "mesh"}],
        },
        {
            "name": "w1",
            "address": "10.88.22.2",
            "block": "192.168.1.0/24",
            "tunnel_ip": "192.168.1.1",
            "peers": [{"name": "m", "address": "10.88.22.1", "protocol": "Mesh_10_88_22_1", "type": "mesh"}],
            "pods": [{"name": "pod-a", "ip": "192.168.1.2", "veth": "cali1", "netns": "lc-t.w1.pod-a"}],
        },
    ],
    name="t",
    network={"lan": "10.88.0.0/16", "gateway": "10.88.255.254"},
)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("x", "kind", "node"),
    [
        ("pod-a", "pod", "w1"),
        ("192.168.1.2", "pod", "w1"),
        ("10.88.22.1", "node", "m"),
        ("w1", "node", "w1"),
        ("192.168.0.1", "tunnel", "m"),
        ("192.168.1.77", "ip", "w1"),
        ("8.8.8.8", "external", None),
    ],
)
def test_trace_resolve(x, kind, node):
    r = trace.resolve(MODEL, x)
    assert (r["kind"], r["node"]) == (kind, node)


@pytest.mark.unit
def test_trace_resolve_rejects_unknown_names():
    from labctl.errors import UsageError

    with pytest.raises(UsageError, match="pod-a"):
        trace.resolve(MODEL, "nope")


@pytest.mark.unit
def test_route_line_from_ip_json():
    r = {
        "dst": "192.168.2.0/24",
        "gateway": "192.168.2.1",
        "dev": "vxlan.calico",
        "protocol": "bird",
        "metric": 32,
        "flags": ["onlink"],
    }
    assert trace.route_line(r) == "192.168.2.0/24 via 192.168.2.1 dev vxlan.calico proto bird metric 32 onlink"
    assert trace.route_line({"type": "blackhole", "dst": "192.168.1.0/24", "protocol": "bird", "flags": []}) == (
        "blackhole 192.168.1.0/24 proto bird"
    )


def _rows(established=True):
    def row(name, ip, tun, peers, labels):
        return {
            "name": name,
            "role": "worker",
            "state": "running",
            "interface": "ens192",
            "physical_ip": ip + "/16",
            "tunnel_device": "vxlan.calico",
            "tunnel_ip": tun,
            "block": "",
            "labels": labels,
            "bgp": {
                "established": 1,
                "expected": 1,
                "peers": [
                    {"name": p, "state": "up", "info": "Established" if established else "Active", "since": ""}
                    for p in peers
                ],
            },
        }

    return [
        row("m", "10.88.22.1", "192.168.0.1", ["Mesh_10_88_22_2"], {}),
        row("w1", "10.88.22.2", "192.168.1.1", ["Mesh_10_88_22_1"], {"worker": "no-1 <&\"'>"}),
    ]


@pytest.mark.unit
@pytest.mark.parametrize("established", [True, False])
def test_svg_is_xml_with_every_node_and_ip(established):
    out = graph_svg.svg(MODEL, _rows(established))
    root = ET.fromstring(out)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join("".join(e.itertext()) for e in root.iter())
    for want in (
        "m",
        "w1",
        "10.88.22.1/16",
        "10.88.22.2/16",
        "192.168.0.1",
        "192.168.1.1",
        "vxlan.calico",
        "10.88.0.0/16",
    ):
        assert want in text
    assert "worker=no-1 <&" in text  # escaped in the file, intact once parsed
    strokes = {p.get("stroke") for p in root.iter("{http://www.w3.org/2000/svg}path")}
    assert strokes == {graph_svg.GREEN if established else graph_svg.RED}


# -- the live lab ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # gateway: the default, the LAN's last host
    path = write_yaml(tmp_path_factory.mktemp("lctools") / "topology.yml", renumbered("lctools", 88))
    mp = pytest.MonkeyPatch()
    with real_lab(path) as r:
        mp.setenv("LABCTL_HOME", str(r.home))  # layout.home() reads it at call time
        from labctl.app.lab import Lab

        try:
            yield Lab.find("lctools").require()
        finally:
            mp.undo()


@pytest.mark.netns
def test_live_bgp_sessions_and_learned_routes(lab):
    data = lab.data()
    addr = {n["name"]: n["address"] for n in data["nodes"]}
    block = {n["name"]: n["block"] for n in data["nodes"]}
    rows = bgp.sessions_and_routes(lab)
    assert [r["node"] for r in rows] == list(addr)
    for r in rows:
        me = r["node"]
        others = [n for n in addr if n != me]
        assert r["error"] == ""
        assert [(s["peer_node"], s["peer_address"], s["type"], s["info"]) for s in r["sessions"]] == [
            (o, addr[o], "mesh", "Established") for o in others
        ]
        learned = {x["prefix"]: (x["next_hop"], x["peer_node"], x["kernel"]) for x in r["routes"]}
        assert set(learned) == {block[o] for o in others}
        for o in others:
            next_hop, peer, kernel = learned[block[o]]
            assert (next_hop, peer) == (addr[o], o)
            assert "vxlan.calico" in kernel or "tunl0" in kernel
        assert r["own_block"]["prefix"] == block[me] and r["own_block"]["kind"] == "blackhole"
    one = bgp.sessions_and_routes(lab, "k8s-worker-1")
    assert [r["node"] for r in one] == ["k8s-worker-1"]
    assert "Established" in bgp.format(one, "table")


@pytest.mark.netns
def test_live_trace_pod_a_to_pod_b(lab):
    data = lab.data()
    veth = {w["name"]: w["veth"] for w in data["workloads"]}
    for _ in range(3):  # the first ping after up may race ARP/neighbour setup on a busy machine
        res = trace.trace(lab, "pod-a", "pod-b")
        if res["ping"]["ok"]:
            break
    hops = res["hops"]
    kinds = [h["kind"] for h in hops]
    assert kinds == ["pod", "veth", "route", "encap", "lan", "decap", "route", "deliver"], kinds
    pod, veth_hop, route_a, encap, lan, decap, route_b, deliver = hops
    assert pod["at"] == "pod-a" and pod["get"]["dev"] == "eth0"
    assert veth_hop["at"] == "k8s-worker-1" and veth_hop["device"] == veth["pod-a"]
    assert veth_hop["device"].startswith("cali") and veth_hop["proxy_arp"]
    assert route_a["at"] == "k8s-worker-1"
    assert route_a["route"]["protocol"] == "bird" and route_a["get"]["dev"] == "vxlan.calico"
    assert "k8s-worker-2" in route_a["why"] and "10.88.22.3" in route_a["why"]
    assert (encap["encapsulation"], encap["vni"], encap["port"]) == ("VXLAN", 4096, 4789)
    assert (encap["outer_src"], encap["outer_dst"]) == ("10.88.22.2", "10.88.22.3")
    assert lan["at"] == "k8s-worker-1" and decap["at"] == "k8s-worker-2"
    assert route_b["at"] == "k8s-worker-2" and route_b["get"]["dev"] == veth["pod-b"]
    assert route_b["route"].get("scope") == "link"
    assert deliver["at"] == "pod-b"
    assert res["reached"] and res["ping"]["ok"], res["ping"]
    text = trace.format(res, "text")
    assert text.splitlines()[1].startswith(" 1  pod-a") and "ping from pod-a: ok" in text
    assert "VNI 4096" in text and "10.88.22.2 -> 10.88.22.3:4789" in text


@pytest.mark.netns
def test_live_trace_to_a_node_ip(lab):
    res = trace.trace(lab, "pod-a", "10.88.22.3")
    assert [h["kind"] for h in res["hops"]][-1] == "arrive" and res["hops"][-1]["at"] == "k8s-worker-2"
    assert "encap" not in [h["kind"] for h in res["hops"]]  # node IPs are on the LAN: no tunnel
    assert res["reached"]


@pytest.mark.netns
def test_live_svg(lab):
    from labctl.observe import inspect as ins

    root = ET.fromstring(graph_svg.svg(lab.model(), ins.rows(lab)))
    text = " ".join("".join(e.itertext()) for e in root.iter())
    for n in lab.data()["nodes"]:
        assert n["name"] in text and n["address"] in text and n["tunnel_ip"] in text
    strokes = [p.get("stroke") for p in root.iter("{http://www.w3.org/2000/svg}path")]
    assert strokes == [graph_svg.GREEN] * 3
