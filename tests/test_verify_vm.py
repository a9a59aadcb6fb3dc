"""verify's evaluation of a vm lab, on what the nodes and the Kubernetes API would answer.
(A real cluster cannot run here; collect() for vm is exercised by the cloud smoke workflow.)"""

import pytest

from conftest import ROOT
from labctl.live.nodes import NodeFacts, parse_probe
from labctl.observe.verify import Observed, _api_workloads, answers, evaluate
from labctl.outputs import render
from labctl.plan import layout
from labctl.spec import schedule, topology

pytestmark = pytest.mark.unit

# `birdcl show protocols` inside calico-node (Calico's BIRD 1.6 fork), as calicoctl shows it
BIRD = """BIRD v0.3.3+birdv1.6.8 ready.
name     proto    table    state  since       info
static1  Static   master   up     10:01:02
kernel1  Kernel   master   up     10:01:02
device1  Device   master   up     10:01:02
direct1  Direct   master   up     10:01:02
Mesh_10_12_22_{a} BGP      master   up     10:01:09    Established
Mesh_10_12_22_{b} BGP      master   up     10:01:10    Established
"""


def node_json(name, labels, ready="True"):
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def pod_json(workload, node, ip):
    """A Pod as `kubectl get -o json` prints it (trimmed to the fields a reader may touch)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"labctl-{workload}",
            "namespace": "default",
            "labels": {"labctl.io/workload": workload, "app.kubernetes.io/managed-by": "labctl"},
            "annotations": {"cni.projectcalico.org/podIP": f"{ip}/32", "cni.projectcalico.org/podIPs": f"{ip}/32"},
        },
        "spec": {"nodeName": node, "nodeSelector": {}, "containers": [{"name": "net", "image": "busybox:1.36"}]},
        "status": {"phase": "Running", "hostIP": "10.12.22.2", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


# the host-side veths Calico's CNI plugin names for default/labctl-pod-a and -pod-b:
# "cali" + sha1("default.labctl-pod-a").hexdigest()[:11], worked out by hand
VETH = {"k8s-worker-1": "calib3b20792982", "k8s-worker-2": "cali71293c7c2a2"}

# busybox 1.36 `nslookup kubernetes.default.svc.cluster.local` in a pod (kube-dns at 10.96.0.10): the A
# answer, then none for AAAA, with exit code 1 (the worst case: the answer must decide, not the code)
NSLOOKUP = """Server:\t\t10.96.0.10
Address:\t10.96.0.10:53

Name:\tkubernetes.default.svc.cluster.local
Address: {ip}

*** Can't find kubernetes.default.svc.cluster.local: No answer

rc=1
"""


@pytest.fixture
def lab(tmp_path):
    src = ROOT / "inventories/vm-cloud/topology.yml"
    t = topology.load(src)
    ctx_plan = schedule.plan(t)
    return render.build(ctx_plan, layout.LabDir(tmp_path / "lab"))


def observed(model, labels2=None, ready2="True", ds_ready=3, ping_rc=0, dns="10.96.0.1", veth=VETH):
    nodes = [n.to_data() for n in model.nodes]
    base = {"kubernetes.io/hostname": None, "kubernetes.io/os": "linux"}
    items = [node_json(n["name"], {**base, "kubernetes.io/hostname": n["name"], **n["labels"]}) for n in nodes]
    if labels2 is not None:
        items[2]["metadata"]["labels"] = labels2
    items[2]["status"]["conditions"][0]["status"] = ready2
    items += [
        pod_json("pod-a", "k8s-worker-1", "192.168.77.5"),
        pod_json("pod-b", "k8s-worker-2", "192.168.201.9"),
        {
            "kind": "DaemonSet",
            "metadata": {"name": "calico-node"},
            "status": {"numberReady": ds_ready, "desiredNumberScheduled": 3},
        },
    ]
    facts = {}
    # Calico's IPAM picked these blocks, not labctl's plan
    blocks = {"k8s-master": "192.168.13.0/26", "k8s-worker-1": "192.168.77.0/26", "k8s-worker-2": "192.168.201.0/26"}
    import json

    for i, n in enumerate(nodes):
        others = [x for x in (1, 2, 3) if x != i + 1]
        routes = [{"dst": blocks[n["name"]], "type": "blackhole", "protocol": "bird"}] + [
            {"dst": blocks[p["name"]], "gateway": p["address"], "dev": "tunl0", "protocol": "bird"}
            for p in nodes
            if p["name"] != n["name"]
        ]
        # Calico's /32 to each local pod, on its cali* veth
        pods = {"k8s-worker-1": "192.168.77.5", "k8s-worker-2": "192.168.201.9"}
        if n["name"] in pods:
            routes.append({"dst": pods[n["name"]], "dev": veth[n["name"]], "scope": "link", "flags": []})
        out = "\n".join(
            [
                "=====labctl:hostname",
                n["name"],
                "=====labctl:addr",
                json.dumps(
                    [
                        {"ifname": "ens192", "addr_info": [{"local": n["address"], "prefixlen": 16}]},
                        {"ifname": "tunl0", "addr_info": [{"local": f"192.168.{i}.1", "prefixlen": 32}]},
                    ]
                ),
                "=====labctl:route",
                json.dumps(routes),
                "=====labctl:bird",
                BIRD.format(a=others[0], b=others[1]),
            ]
            + (
                ["=====labctl:k8s", json.dumps({"kind": "List", "items": items})]
                if n["role"] == "control-plane"
                else []
            )
        )
        facts[n["name"]] = parse_probe(NodeFacts(n["name"], n["address"], reachable=True), out)
    workloads = _api_workloads(facts["k8s-master"].k8s)
    pings = {
        "pod-a->pod-b": f"1 packets transmitted, 1 received\nround-trip min/avg/max = 0.4/0.5/0.6 ms\nrc={ping_rc}\n"
    }
    text = (
        NSLOOKUP.format(ip=dns)
        if dns
        else "nslookup: can't connect to remote host (10.96.0.10): Network unreachable\nrc=1\n"
    )
    return Observed(facts, workloads, pings, dns=text)


def failing(checks):
    return {(c.check, c.target) for c in checks if not c.ok}


def test_a_healthy_cluster_passes_every_check(lab):
    checks = evaluate(lab, observed(lab))
    kinds = {c.check for c in checks}
    assert {"ssh", "ready", "bgp", "routes", "labels", "calico-node", "placement", "ping", "dns"} <= kinds
    assert failing(checks) == set(), [c for c in checks if not c.ok]
    # Kubernetes' own labels are fine next to the declared ones
    assert any(c.check == "labels" and c.target == "k8s-worker-1" and c.detail == "worker=no-1" for c in checks)


@pytest.mark.parametrize(
    "kwargs, want",
    [
        ({"labels2": {"kubernetes.io/hostname": "k8s-worker-2"}}, {("labels", "k8s-worker-2"), ("placement", "pod-b")}),
        ({"ready2": "False"}, {("ready", "k8s-worker-2")}),
        ({"ds_ready": 2}, {("calico-node", "calico-system")}),
        ({"ping_rc": 1}, {("ping", "pod-a->pod-b")}),
        ({"dns": None}, {("dns", "kubernetes.default")}),
        ({"dns": "10.96.0.99"}, {("dns", "kubernetes.default")}),
        # a /32 left on another veth (a stale route): the pod is not reached through its own
        ({"veth": VETH | {"k8s-worker-2": "cali0000aaaabbb"}}, {("pod-route", "pod-b")}),
    ],
)
def test_each_fault_is_named(lab, kwargs, want):
    assert failing(evaluate(lab, observed(lab, **kwargs))) == want


def test_bgp_down_on_one_node(lab):
    obs = observed(lab)
    obs.facts["k8s-master"].sessions[0].info = "Connect"
    assert failing(evaluate(lab, obs)) == {("bgp", "k8s-master")}


def test_the_healthy_cluster_reads_pods_from_the_api_and_resolves_through_the_cluster_dns(lab):
    obs = observed(lab)
    assert [(w["name"], w["pod"], w["namespace"], w["node"], w["ip"]) for w in obs.workloads] == [
        ("pod-a", "labctl-pod-a", "default", "k8s-worker-1", "192.168.77.5"),
        ("pod-b", "labctl-pod-b", "default", "k8s-worker-2", "192.168.201.9"),
    ]
    checks = {(c.check, c.target): c for c in evaluate(lab, obs)}
    # exit code 1 (no AAAA answer) although the A answer is right: the answer decides
    assert checks[("dns", "kubernetes.default")].ok, checks[("dns", "kubernetes.default")]
    assert "10.96.0.1" in checks[("dns", "kubernetes.default")].detail
    assert checks[("pod-route", "pod-b")].ok and "cali71293c7c2a2" in checks[("pod-route", "pod-b")].detail


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (NSLOOKUP.format(ip="10.96.0.1"), ["10.96.0.1"]),
        # bind9's nslookup (a Debian image): the server's address carries #53
        (
            "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10#53\n\nName:\tkubernetes.default.svc.cluster.local\n"
            "Address: 10.96.0.1\n",
            ["10.96.0.1"],
        ),
        (";; connection timed out; no servers could be reached\n", []),
    ],
)
def test_nslookup_answers(text, want):
    assert answers(text) == want


def test_collect_pings_and_resolves_from_the_pods_own_namespace(lab, monkeypatch):
    """The commands verify sends through the control plane: kubectl exec into the pod in its namespace."""
    from labctl.observe import verify

    obs = observed(lab)
    for item in obs.facts["k8s-master"].k8s["items"]:
        if item["kind"] == "Pod":
            item["metadata"]["namespace"] = "labs"
    sent = []

    class Shell:
        def __init__(self, lab_dir, node):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def run(self, command, timeout=30.0):
            sent.append(command)
            return (1, NSLOOKUP.format(ip="10.96.0.1"), "") if "nslookup" in command else (0, "", "")

    class Lab:
        dir = None

        def model(self):
            return lab

    monkeypatch.setattr(verify.nodefacts, "gather_lab", lambda *a, **k: list(obs.facts.values()))
    monkeypatch.setattr(verify.live, "NodeShell", Shell)
    model, got = verify.collect(Lab())
    k = "sudo -n kubectl --kubeconfig /etc/kubernetes/admin.conf"  # vm-cloud logs in as ubuntu
    assert sent == [
        f"{k} exec -n labs labctl-pod-a -- ping -c1 -W2 -q 192.168.201.9 2>&1",
        f"{k} exec -n labs labctl-pod-a -- nslookup kubernetes.default.svc.cluster.local 2>&1",
    ]
    assert {(c.check, c.ok) for c in evaluate(model, got) if c.check == "dns"} == {("dns", True)}


def test_a_label_labctl_set_earlier_and_the_topology_dropped_is_noticed(lab):
    """Issue 21 item 10: worker-2 still carries `rack=r2`, which labctl set (its labctl.io/labels
    annotation lists it) and the topology no longer declares; a label someone else set is not ours."""
    obs = observed(lab)
    cp = next(n.name for n in lab.nodes if n.role == "control-plane")
    items = obs.facts[cp].k8s["items"]
    w2 = next(i for i in items if i.get("kind") == "Node" and i["metadata"]["name"] == "k8s-worker-2")
    w2["metadata"]["labels"] |= {"rack": "r2", "team": "net"}
    w2["metadata"]["annotations"] = {"labctl.io/labels": "rack,worker"}
    checks = evaluate(lab, obs)
    assert failing(checks) == {("labels", "k8s-worker-2")}
    bad = next(c for c in checks if c.check == "labels" and c.target == "k8s-worker-2")
    assert bad.detail == "labctl's earlier label(s) still set: rack", bad.detail
