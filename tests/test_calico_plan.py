"""labctl.spec.calico: Calico's encapsulation semantics have one home, and nothing else decides them."""

import re
from types import SimpleNamespace

import pytest

from conftest import ROOT
from labctl.observe import trace
from labctl.spec import calico

pytestmark = pytest.mark.unit

PEER = {"address": "10.0.0.2", "tunnel_ip": "192.168.1.0", "block": "192.168.1.0/24"}


@pytest.mark.parametrize(
    "enc, ipip, device, emulated, mode",
    [
        ("IPIP", True, "tunl0", False, "tunl0"),
        ("IPIP", False, "vxlan.calico", True, "vxlan.calico"),
        ("IPIPCrossSubnet", True, "tunl0", False, "direct"),
        ("VXLAN", True, "vxlan.calico", False, "vxlan.calico"),
        ("VXLANCrossSubnet", False, "vxlan.calico", False, "direct"),
        ("None", True, None, False, "direct"),
    ],
)
def test_tunnel_device_fallback_and_route_mode(enc, ipip, device, emulated, mode):
    assert calico.tunnel_device(enc, ipip) == device
    assert calico.ipip_emulated(enc, device) is emulated
    assert calico.mode(enc, device) == enc + (" (IPIP emulated on vxlan.calico)" if emulated else "")
    assert calico.route_mode(enc, device) == mode
    assert calico.vteps(device) is (device == "vxlan.calico")


@pytest.mark.parametrize(
    "enc, same, other", [("IPIP", True, True), ("IPIPCrossSubnet", False, True), ("VXLANCrossSubnet", False, True)]
)
def test_which_hop_encapsulates(enc, same, other):
    assert calico.encapsulates(enc, same_network=True) is same
    assert calico.encapsulates(enc, same_network=False) is other
    assert calico.encapsulates("None", same_network=False) is False


def test_who_programs_the_routes_and_how():
    assert calico.felix_programs("VXLANCrossSubnet") and not calico.felix_programs("IPIP")
    assert calico.bird_action(True, "tunl0", PEER) == "accept;"
    assert calico.bird_action(False, "tunl0", PEER) == 'ifname = "tunl0"; onlink = true; gw = 10.0.0.2; accept;'
    vx = 'ifname = "vxlan.calico"; onlink = true; gw = 192.168.1.0; accept;'
    assert calico.bird_action(False, "vxlan.calico", PEER) == vx
    assert calico.felix_route(True, PEER, "eth0") == "192.168.1.0/24 via 10.0.0.2 dev eth0 proto 80"
    assert calico.felix_route(False, PEER, "eth0") == "192.168.1.0/24 via 192.168.1.0 dev vxlan.calico onlink proto 80"


def test_no_other_module_decides_the_encapsulation():
    """The encapsulation's name tests and the tunnel device comparisons live in spec/calico.py (the topology's
    validation reads them there too); templates get the decided values."""
    names = re.compile(
        r'(startswith|endswith)\("(IPIP|VXLAN|CrossSubnet)"\)|encapsulation\.(starts|ends)|encapsulation [=!]= '
    )
    device = re.compile(r'[=!]= "(tunl0|vxlan\.calico)"')  # templates may branch on the decided route_mode
    pkg = ROOT / "labctl"
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in [*pkg.rglob("*.py"), *(ROOT / "templates").glob("*.j2")]
        if p != pkg / "spec" / "calico.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if names.search(line) or (p.suffix == ".py" and device.search(line))
    ]
    assert found == []


@pytest.mark.parametrize(
    "enc, owner_net, why",
    [
        ("IPIP", "a", "; same subnet (a), still encapsulated under IPIP (IPIP emulated on vxlan.calico)"),
        ("IPIPCrossSubnet", "a", "; same subnet (a): native under IPIPCrossSubnet (IPIP emulated on vxlan.calico)"),
        ("VXLANCrossSubnet", "b", "; other subnet (b, behind a router): encapsulated under VXLANCrossSubnet"),
        ("None", "b", "; None: never encapsulated, so routers between the networks must know the pod blocks"),
    ],
)
def test_trace_names_calicos_rule_for_the_hop(enc, owner_net, why):
    t = object.__new__(trace._Trace)  # encap_reason reads only the model and the plan, nothing live
    t.routers, t.d = {"r1": None}, {"node": "n2"}
    t.nodes = {"n1": SimpleNamespace(name="n1", network="a"), "n2": SimpleNamespace(name="n2", network=owner_net)}
    t.model = SimpleNamespace(calico=SimpleNamespace(encapsulation=enc, tunnel_device="vxlan.calico"))
    assert t.encap_reason("n1") == why
