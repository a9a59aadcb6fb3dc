"""`labctl up` on a running lab: which nodes each play touches (the plan --dry-run prints)."""

from pathlib import Path

import pytest
import yaml

from conftest import SEED
from labctl.outputs import render
from labctl.plan import diff as reconcile
from labctl.plan import layout
from labctl.plan.model import LabModel
from labctl.spec import generate, schedule, topology

pytestmark = pytest.mark.unit

LAB = layout.LabDir(Path("/nonexistent/lab"))


def data(d: dict, ipip: bool) -> LabModel:
    plan = schedule.plan(topology.loads(yaml.safe_dump(d)))
    return render.build(plan, LAB, ipip)


def grow(d: dict, labels: dict | None = None) -> dict:
    d = yaml.safe_load(yaml.safe_dump(d))
    n = len(d["nodes"])
    d["nodes"][f"k8s-worker-{n}"] = {"role": "worker", "address": f"10.12.22.{n + 1}", "labels": labels or {}}
    return d


def seed() -> dict:
    return yaml.safe_load(SEED.read_text())


def test_adding_a_worker_with_vxlan_touches_every_node_but_waits_on_the_new_one():
    old, new = data(seed(), ipip=False), data(grow(seed(), {"worker": "no-3"}), ipip=False)
    d = reconcile.diff(old, new)
    everyone = ["k8s-master", "k8s-worker-1", "k8s-worker-2", "k8s-worker-3"]
    assert d.hosts == {
        "network": everyone,  # every VTEP table gains the new node
        "bgp": everyone,
        "workloads": ["k8s-worker-3"],
        "wait": ["k8s-worker-3"],
        "labels": ["k8s-worker-3"],
    }
    assert d.removed_nodes == []


def test_adding_a_client_to_reflectors_over_ipip_touches_only_the_reflectors():
    base = yaml.safe_load(generate.topology(5, reflectors=2))
    d = reconcile.diff(data(base, ipip=True), data(grow(base), ipip=True))
    assert d.hosts["network"] == ["k8s-worker-5"]
    assert d.hosts["bgp"] == ["k8s-master", "k8s-worker-1", "k8s-worker-5"]
    assert d.hosts["wait"] == ["k8s-worker-5"]


def test_removing_a_node_reconfigures_its_peers_and_waits_on_nobody():
    base = yaml.safe_load(generate.topology(4))
    small = yaml.safe_load(yaml.safe_dump(base))
    del small["nodes"]["k8s-worker-3"]
    d = reconcile.diff(data(base, ipip=True), data(small, ipip=True))
    assert d.removed_nodes == ["k8s-worker-3"]
    assert d.hosts["network"] == [] and d.hosts["wait"] == [] and d.hosts["labels"] == []
    assert d.hosts["bgp"] == ["k8s-master", "k8s-worker-1", "k8s-worker-2"]


def test_relabelling_runs_only_the_label_play_there():
    new = seed()
    new["nodes"]["k8s-worker-1"]["labels"]["disk"] = "ssd"
    d = reconcile.diff(data(seed(), ipip=False), data(new, ipip=False))
    assert d.hosts == {"network": [], "bgp": [], "workloads": [], "wait": [], "labels": ["k8s-worker-1"]}
    assert "labels     k8s-worker-1" in reconcile.format(d)
    assert "wait       (skipped)" in reconcile.format(d)


def test_no_change_converges_everything():
    d = reconcile.diff(data(seed(), ipip=False), data(seed(), ipip=False))
    assert d.empty and d.hosts == {} and d.extravars() == {}


# --- `networks:` labs (issue 12 item 6) -------------------------------------------------------------------


def racks(enc: str = "None") -> dict:
    return yaml.safe_load(
        f"""
name: rk-diff
networks:
  rack-a: {{lan: 10.181.1.0/24, gateway: 10.181.1.254, asn: 65001}}
  rack-b: {{lan: 10.181.2.0/24, gateway: 10.181.2.254, asn: 65002}}
routers:
  core: {{interfaces: {{rack-a: 10.181.1.254, rack-b: 10.181.2.254}}, asn: 65000}}
calico: {{encapsulation: {enc}, block_size: 24, bgp: tor}}
defaults: {{interface: ens192}}
nodes:
  k8s-master: {{role: control-plane, network: rack-a, address: 10.181.1.1}}
  k8s-worker-1: {{role: worker, network: rack-a, address: 10.181.1.2}}
  k8s-worker-2: {{role: worker, network: rack-b, address: 10.181.2.3}}
"""
    )


def with_rack_c(d: dict) -> dict:
    d = yaml.safe_load(yaml.safe_dump(d))
    d["networks"]["rack-c"] = {"lan": "10.181.3.0/24", "gateway": "10.181.3.254", "asn": 65003}
    d["routers"]["core"]["interfaces"]["rack-c"] = "10.181.3.254"
    d["nodes"]["k8s-worker-3"] = {"role": "worker", "network": "rack-c", "address": "10.181.3.4"}
    return d


def test_adding_a_network_with_a_router_interface_and_a_node_is_applied_in_place():
    old, new = data(racks(), ipip=True), data(with_rack_c(racks()), ipip=True)
    d = reconcile.diff(old, new)
    assert reconcile.refusal(d, "rk-diff") is None, reconcile.format(d)
    got = {(c.op, c.kind, c.name) for c in d.changes}
    assert {("+", "network", "rack-c"), ("~", "router", "core"), ("+", "node", "k8s-worker-3")} <= got
    assert "+ rack-c 10.181.3.254" in reconcile.format(d)
    # no tunnel (None): only the new node's network; BIRD on every node, whose kernel filter takes the
    # new block; the sessions waited for are the new node's (the router's are waited for on the router)
    assert d.hosts["network"] == ["k8s-worker-3"]
    assert d.hosts["bgp"] == ["k8s-master", "k8s-worker-1", "k8s-worker-2", "k8s-worker-3"]
    assert d.hosts["wait"] == ["k8s-worker-3"] and d.removed_nodes == []


def test_adding_a_node_to_a_rack_networks_only_it_and_reloads_bird_where_the_filter_changes():
    new = racks("IPIPCrossSubnet")
    new["nodes"]["k8s-worker-4"] = {"role": "worker", "network": "rack-b", "address": "10.181.2.5"}
    d = reconcile.diff(data(racks("IPIPCrossSubnet"), ipip=True), data(new, ipip=True))
    assert [(c.op, c.kind, c.name) for c in d.changes if c.kind != "workload"] == [("+", "node", "k8s-worker-4")]
    assert d.hosts["network"] == ["k8s-worker-4"] and d.hosts["wait"] == ["k8s-worker-4"]
    # each node's kernel filter names every other block: all reload BIRD (configure, never a restart)
    assert "k8s-worker-4" in d.hosts["bgp"] and len(d.hosts["bgp"]) == 4


def test_a_network_or_router_interface_that_changes_or_goes_is_refused():
    base = racks()
    moved = yaml.safe_load(yaml.safe_dump(base))
    moved["networks"]["rack-b"]["lan"] = "10.181.4.0/24"
    moved["networks"]["rack-b"]["gateway"] = "10.181.4.254"
    moved["routers"]["core"]["interfaces"]["rack-b"] = "10.181.4.254"
    moved["nodes"]["k8s-worker-2"]["address"] = "10.181.4.3"
    d = reconcile.diff(data(base, ipip=True), data(moved, ipip=True))
    err = reconcile.refusal(d, "rk-diff")
    assert err is not None and "networks.rack-b" in str(err) and "routers.core" in str(err)
    grown = data(with_rack_c(base), ipip=True)
    d = reconcile.diff(grown, data(base | {"nodes": base["nodes"]}, ipip=True))
    assert "networks.rack-c" in str(reconcile.refusal(d, "rk-diff"))


def test_up_plans_and_builds_the_lab_model_once(monkeypatch, labhome):
    """Issue 9: `up` plans the topology once (the plan is kept on the topology, no cache keyed by id())
    and builds the lab model once; topology-data.json is that model's dump. A vm lab whose host-touching
    steps (host keys, SSH masters, the playbook) are stubbed: nothing is sent anywhere."""
    from types import SimpleNamespace

    from conftest import ROOT
    from labctl.app.lab import Lab
    from labctl.live import sshmux
    from labctl.outputs import runner
    from labctl.plan.model import LabModel
    from labctl.progress import Progress
    from labctl.providers.vm import VmProvider

    built, planned = [], []
    build, plan = render.build, schedule._plan
    monkeypatch.setattr(render, "build", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    monkeypatch.setattr(schedule, "_plan", lambda t: planned.append(t) or plan(t))
    monkeypatch.setattr(VmProvider, "check_host_keys", lambda self, data, progress: None)
    monkeypatch.setattr(sshmux, "open_masters", lambda model, lab: [])
    monkeypatch.setattr(runner, "run_playbook", lambda *a, **k: SimpleNamespace(changed={}))
    src = ROOT / "inventories/vm-cloud/topology.yml"
    t = topology.load(src)
    lab = Lab(layout.lab_dir(t.name))
    st = lab.up(t, src, Progress(None, quiet=True))
    assert st["phase"] == "ready"
    assert len(planned) == 1 and len(built) == 1
    assert lab.dir.topology_data.read_text() == built[0].dump_json()
    assert LabModel.load(lab.dir.topology_data) == built[0]
