"""Issue 14 items 3-5 without a lab: topology impairments and checks validated, what they render
to, the check evaluators, retries and wait, and fail/repair refused where a provider has no faults."""

import json

import pytest
import yaml

from conftest import SEED, lab_model, labctl
from labctl import providers
from labctl.errors import TopologyError, UsageError
from labctl.live import impair
from labctl.live.bird import Session
from labctl.live.nodes import NodeFacts
from labctl.observe import labchecks
from labctl.observe.checks import Check
from labctl.outputs import render
from labctl.plan import faults
from labctl.plan.layout import LabDir
from labctl.plan.model import LabModel
from labctl.spec import netem, schedule, topology
from labctl.spec.schema import LabCheck

pytestmark = pytest.mark.unit


def seed(**extra) -> dict:
    return yaml.safe_load(SEED.read_text()) | extra


def write(tmp_path, d) -> str:
    p = tmp_path / "t.yml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(p)


BAD = [
    ({"impairments": [{"node": "nope", "rate": "1mbit"}]}, "impairments[0].node: 'nope' is not a node of this lab"),
    ({"impairments": [{"node": "k8s-master:eth9", "rate": "1mbit"}]}, "no interface 'eth9' on k8s-master"),
    ({"impairments": [{"node": "k8s-master", "loss": "150%"}]}, "impairments[0].loss: loss '150%': out of range"),
    ({"impairments": [{"node": "k8s-master", "rate": "1bit"}]}, "impairments[0].rate: rate 1bit: out of range"),
    ({"impairments": [{"node": "k8s-master", "jitter": "5ms"}]}, "impairments[0].jitter: jitter needs delay"),
    ({"impairments": [{"node": "k8s-master"}]}, "impairments[0]: nothing to impair"),
    ({"checks": [{"name": "x", "reach": "pod-a -> pod-zz"}]}, "'pod-zz' is neither a workload nor a node"),
    ({"checks": [{"name": "x", "bgp": {"node": "ghost", "established": 2}}]}, "checks[0].bgp.node: 'ghost' is not"),
    ({"checks": [{"name": "x", "route": {"node": "k8s-master", "prefix": "1.2.3.0/24", "via": "ghost"}}]}, "via"),
    ({"checks": [{"name": "x", "reach": "pod-a"}]}, "'pod-a' is not 'A -> B'"),
    ({"checks": [{"name": "x"}]}, "exactly one of exec, reach, route, bgp (has 0)"),
    ({"checks": [{"name": "x", "reach": "pod-a -> pod-b", "expect": "y"}]}, "apply to exec checks only"),
    (
        {"checks": [{"name": "x", "exec": {"node": "k8s-master", "command": "true"}, "expect_regex": "("}]},
        "not a regular expression",
    ),
    (
        {"checks": [{"name": "x", "reach": "pod-a -> pod-b", "retries": 1000}]},
        "checks[0].retries: 1000 is out of range",
    ),
    (
        {"checks": [{"name": "x", "reach": "pod-a -> pod-b"}, {"name": "x", "reach": "pod-b -> pod-a"}]},
        "check 'x' is declared twice",
    ),
]


@pytest.mark.parametrize("extra,line", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_impairments_and_checks_are_one_line_each(extra, line):
    with pytest.raises(TopologyError) as e:
        topology.loads(yaml.safe_dump(seed(**extra), sort_keys=False))
    assert len(e.value.problems) == 1 and line in e.value.problems[0], e.value.problems


def test_a_check_naming_a_missing_pod_exit_2_nothing_started(tmp_path, labhome):
    t = write(tmp_path, seed(checks=[{"name": "x", "reach": "pod-a -> pod-zz"}]))
    for cmd in (["validate", "-t", t], ["up", "-t", t]):
        p = labctl(*cmd, home=labhome)
        assert p.returncode == 2, (cmd, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "checks[0].reach: 'pod-zz' is neither a workload nor a node" in lines[0], lines
    assert not any(labhome.iterdir())  # up created nothing


def test_netem_in_the_topology_is_refused_where_the_kernel_lacks_it(tmp_path, labhome):
    t = write(tmp_path, seed(impairments=[{"node": "k8s-worker-1", "delay": "100ms", "jitter": "5ms"}]))
    p = labctl("validate", "-t", t, home=labhome)
    if impair.netem_on_this_host():
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode == 1 and netem.NO_NETEM in p.stderr and len(p.stderr.strip().splitlines()) == 1
    # rate alone needs only tbf
    t = write(tmp_path, seed(impairments=[{"node": "k8s-worker-1", "rate": "10mbit"}]))
    assert labctl("validate", "-t", t, home=labhome).returncode == 0


def test_render_carries_impairments_and_checks(tmp_path):
    d = seed(
        impairments=[{"node": "k8s-worker-1", "rate": "10mbit"}, {"node": "k8s-master:vxlan.calico", "loss": "1%"}],
        checks=[{"name": "c", "route": {"node": "k8s-master", "prefix": "192.168.1.0/24", "via": "k8s-worker-1"}}],
    )
    t = topology.loads(yaml.safe_dump(d))
    plan = schedule.plan(t)
    model = render.build(plan, LabDir(tmp_path))
    data = model.to_data()
    assert data["impairments"] == [
        {"node": "k8s-worker-1", "interface": "ens192", "spec": {"rate_bit": 10_000_000}},
        {"node": "k8s-master", "interface": "vxlan.calico", "spec": {"loss_pct": 1.0}},
    ]
    assert impair.needs_netem(model) == ["k8s-master:vxlan.calico"]
    assert data["checks"][0]["route"] == {"node": "k8s-master", "prefix": "192.168.1.0/24", "via": "k8s-worker-1"}
    assert LabModel.model_validate_json(model.dump_json()).dump_json() == model.dump_json()
    plain = topology.loads(SEED.read_text())
    p2 = schedule.plan(plain)
    assert not {"impairments", "checks"} & render.build(p2, LabDir(tmp_path)).to_data().keys()


def test_summary_matches_what_tc_shows():
    s = netem.spec(delay="50ms", jitter="5ms", loss="5%", rate="10mbit")
    tc = [
        {"kind": "netem", "options": {"delay": {"delay": 0.05, "jitter": 0.005}, "loss-random": {"loss": 0.05}}},
        {"kind": "tbf", "options": {"rate": 1250000}},
    ]
    assert netem.summary(s) == netem.describe(json.dumps(tc)) == "delay 50ms±5ms loss 5% rate 10mbit"


NODES = [
    {"name": "a", "address": "10.0.0.1", "tunnel_ip": "192.168.0.1", "role": "control-plane"},
    {"name": "b", "address": "10.0.0.2", "tunnel_ip": "192.168.1.1", "block": "192.168.1.0/24"},
]
MODEL = lab_model(NODES, calico={"tunnel_device": "vxlan.calico"}, workloads=[])


def facts(**kw) -> NodeFacts:
    f = NodeFacts("a", "10.0.0.1", reachable=True)
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def check(**spec) -> LabCheck:
    return LabCheck.model_validate({"name": "c"} | spec)


def test_route_check_via_node_or_address():
    f = facts(routes=[{"dst": "192.168.1.0/24", "gateway": "192.168.1.1", "dev": "vxlan.calico"}])
    route = {"node": "a", "prefix": "192.168.1.0/24", "via": "b"}
    assert labchecks._route(MODEL, check(route=route), f, "")[0] is True
    ok, detail = labchecks._route(MODEL, check(route=route | {"via": "10.9.9.9"}), f, "")
    assert not ok and "not via 10.9.9.9" in detail
    ok, detail = labchecks._route(MODEL, check(route={"node": "a", "prefix": "192.168.7.0/24"}), f, "")
    assert not ok and detail == "a has no route to 192.168.7.0/24"


def test_bgp_and_exec_checks():
    up = Session("Node_10_0_0_2", "up", "Established")
    down = Session("Node_10_0_0_3", "start", "Active")
    spec = check(bgp={"node": "a", "established": 1})
    assert labchecks._bgp(MODEL, spec, facts(sessions=[up, down], bird_running=True), "")[0] is True
    ok, detail = labchecks._bgp(MODEL, spec, facts(sessions=[], bird_running=False), "")
    assert not ok and "BIRD not running" in detail
    ex = check(exec={"node": "a", "command": "ip route"}, expect="192.168.1.0/24")
    assert labchecks._exec(MODEL, ex, None, "192.168.1.0/24 via x\nrc=0\n")[0] is True
    assert "output lacks" in labchecks._exec(MODEL, ex, None, "nothing\nrc=0\n")[1]
    assert "exit 1" in labchecks._exec(MODEL, ex, None, "oops\nrc=1\n")[1]
    rx = check(exec={"node": "a", "command": "x"}, expect_regex=r"^192\.168\.\d+\.0/24 via")
    assert labchecks._exec(MODEL, rx, None, "other\n192.168.4.0/24 via y\nrc=0\n")[0] is True


def test_wait_and_retries(monkeypatch):
    data = lab_model(
        NODES,
        checks=[
            {"name": "flaky", "bgp": {"node": "a", "established": 1}, "retries": 2, "wait": 0},
            {"name": "late", "bgp": {"node": "b", "established": 1}, "wait": 3, "retries": 0},
        ],
    )
    tries, clock = [], [0.0]
    monkeypatch.setattr(labchecks.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(labchecks.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))

    def fake_round(lab, data, due):
        out = {}
        for i, s in due:
            tries.append((s.name, clock[0]))
            out[i] = Check("check", s.name, s.name == "late" or len(tries) > 2)
        return out

    monkeypatch.setattr(labchecks, "_round", fake_round)
    res = labchecks.run(None, data)
    assert [c.ok for c in res] == [True, True]
    assert [t for t in tries if t[0] == "flaky"] == [("flaky", 0.0), ("flaky", 1.0), ("flaky", 2.0)]
    assert [t for t in tries if t[0] == "late"] == [("late", 3.0)]


@pytest.mark.parametrize("provider", ["vm", "qemu"])
def test_fail_is_refused_where_the_provider_has_no_faults(provider):
    with pytest.raises(UsageError, match=f"not supported for the {provider} provider"):
        providers.get(provider).fail({}, {"name": "n"}, "bird")
    assert providers.get("netns").fault_kinds == faults.KINDS


def test_fault_record_shown():
    st = {"faults": {"a": {"bird": {"pid": 1}, "node": {"pids": [2]}}, "b": {}}}
    assert faults.shown(st) == {"a": "bird,node"}


def test_verify_only_checks_on_a_lab_without_checks_is_bad_input(labhome):
    (labhome / "exnone").mkdir()
    (labhome / "exnone" / "topology-data.json").write_text(MODEL.model_copy(update={"name": "exnone"}).dump_json())
    p = labctl("verify", "--name", "exnone", "--only", "checks", home=labhome)
    assert p.returncode == 2 and "lab exnone has no checks" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_the_plan_names_impairment_changes_and_reruns_no_play(tmp_path):
    from labctl.plan import diff as reconcile

    def data(**extra):
        t = topology.loads(yaml.safe_dump(seed(**extra)))
        plan = schedule.plan(t)
        return render.build(plan, LabDir(tmp_path))

    old = data(impairments=[{"node": "k8s-worker-1", "rate": "10mbit"}, {"node": "k8s-master", "rate": "1mbit"}])
    new = data(impairments=[{"node": "k8s-worker-1", "rate": "20mbit"}, {"node": "k8s-worker-2", "rate": "1mbit"}])
    d = reconcile.diff(old, new)
    assert [(c.op, c.kind, c.name, c.detail) for c in d.changes] == [
        ("+", "impairment", "k8s-worker-2:ens192", "rate 1mbit"),
        ("~", "impairment", "k8s-worker-1:ens192", "rate 10mbit -> rate 20mbit"),
        ("-", "impairment", "k8s-master:ens192", "rate 1mbit cleared"),
    ]
    assert all(hosts == [] for hosts in d.hosts.values()) and reconcile.refusal(d, "x") is None
    assert reconcile.diff(old, old).empty
