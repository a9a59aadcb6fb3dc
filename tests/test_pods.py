"""Real pods on a cluster lab (vm, qemu): the parsers on outputs recorded in the upstream formats
(`kubectl get pods -o json`, `crictl pods -o json`, `crictl inspectp`, `ip -j route`), a whole
`labctl trace` against a fake cluster that answers only what a real one would, and who programs the
pod routes by Calico version (BIRD up to v3.32, Felix's proto 80 for IPIP from v3.33)."""

import json

import pytest

from conftest import lab_model
from labctl.live.nodes import NodeFacts, parse_probe
from labctl.observe import pods, trace
from labctl.spec import calico

pytestmark = pytest.mark.unit

# -- recorded outputs ------------------------------------------------------------------------------

# `kubectl get pods -A -l labctl.io/workload -o json` on the control plane: a v1 List of Pods; Calico
# IPAM gave the pods addresses of its own blocks (not labctl's plan), and pod-c is still Pending
KUBECTL_PODS = {
    "apiVersion": "v1",
    "kind": "List",
    "metadata": {"resourceVersion": ""},
    "items": [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "labctl-pod-a",
                "namespace": "default",
                "uid": "2c1d7c0e-6a51-4c3b-9a57-3f0c1b5d9e11",
                "labels": {"app.kubernetes.io/managed-by": "labctl", "labctl.io/workload": "pod-a"},
                "annotations": {
                    "cni.projectcalico.org/containerID": "5b0a3c9d8e7f",
                    "cni.projectcalico.org/podIP": "192.168.77.5/32",
                    "cni.projectcalico.org/podIPs": "192.168.77.5/32",
                },
            },
            "spec": {
                "containers": [{"name": "net", "image": "busybox:1.36", "command": ["sleep", "1000000"]}],
                "nodeName": "w1",
                "nodeSelector": {"worker": "no-1"},
            },
            "status": {
                "phase": "Running",
                "hostIP": "10.12.22.2",
                "hostIPs": [{"ip": "10.12.22.2"}],
                "podIP": "192.168.77.5",
                "podIPs": [{"ip": "192.168.77.5"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "labctl-pod-b",
                "namespace": "default",
                "labels": {"app.kubernetes.io/managed-by": "labctl", "labctl.io/workload": "pod-b"},
            },
            "spec": {"nodeName": "w2", "nodeSelector": {"worker": "no-2"}},
            "status": {
                "phase": "Running",
                "hostIP": "10.12.22.3",
                "podIP": "192.168.201.9",
                "podIPs": [{"ip": "192.168.201.9"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "labctl-pod-c", "namespace": "default", "labels": {"labctl.io/workload": "pod-c"}},
            "spec": {"nodeSelector": {"worker": "no-3"}},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]},
        },
    ],
}


def crictl_pods(pod: str, ready_id: str) -> dict:
    """`crictl pods -o json` on a node: calico-node's sandbox, an old NotReady sandbox of the pod (an
    earlier attempt) and its ready one; createdAt is nanoseconds as a string (protobuf int64)."""

    def sandbox(sid, name, ns, state, created, attempt=0):
        return {
            "id": sid,
            "metadata": {"name": name, "uid": f"uid-{sid}", "namespace": ns, "attempt": attempt},
            "state": state,
            "createdAt": created,
            "labels": {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": ns},
            "annotations": {"kubernetes.io/config.source": "api"},
            "runtimeHandler": "",
        }

    return {
        "items": [
            sandbox("c0ffee", "calico-node-x7k2p", "calico-system", "SANDBOX_READY", "1764583000000000000"),
            sandbox("dead01", pod, "default", "SANDBOX_NOTREADY", "1764583100000000000"),
            sandbox(ready_id, pod, "default", "SANDBOX_READY", "1764583200000000000", attempt=1),
        ]
    }


def inspectp(sid: str, name: str, ip: str, netns: str) -> dict:
    """`crictl inspectp ID` with containerd: the CRI status, and containerd's `info` with the OCI
    runtime spec the sandbox was started with (its network namespace path)."""
    return {
        "status": {
            "id": sid,
            "metadata": {"attempt": 1, "name": name, "namespace": "default", "uid": f"uid-{sid}"},
            "state": "SANDBOX_READY",
            "createdAt": "2026-12-01T10:00:00.000000000Z",
            "network": {"additionalIps": [], "ip": ip},
            "linux": {
                "namespaces": {
                    "options": {
                        "ipc": "POD",
                        "network": "POD",
                        "pid": "CONTAINER",
                        "targetId": "",
                        "usernsOptions": None,
                    }
                }
            },
            "labels": {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "default"},
            "annotations": {},
            "runtimeHandler": "",
        },
        "info": {
            "pid": 4242,
            "processStatus": "running",
            "netNamespaceClosed": False,
            "image": "registry.k8s.io/pause:3.10",
            "snapshotKey": sid,
            "snapshotter": "overlayfs",
            "runtimeHandler": "",
            "runtimeType": "io.containerd.runc.v2",
            "runtimeOptions": {"systemd_cgroup": True},
            "config": {"metadata": {"name": name, "namespace": "default", "attempt": 1}},
            "runtimeSpec": {
                "ociVersion": "1.1.0",
                "process": {"user": {"uid": 65535, "gid": 65535}, "args": ["/pause"], "cwd": "/"},
                "root": {"path": "rootfs", "readonly": True},
                "linux": {
                    "cgroupsPath": f"kubepods-besteffort-pod.slice:cri-containerd:{sid}",
                    "namespaces": [
                        {"type": "pid"},
                        {"type": "ipc"},
                        {"type": "uts"},
                        {"type": "mount"},
                        {"type": "network", "path": netns},
                    ],
                },
            },
        },
    }


NETNS = {"pod-a": "/var/run/netns/cni-3f1b0c6e-aa11-4b2c-9d1e-0123456789ab", "pod-b": "/var/run/netns/cni-77e0c2d4"}
# host-side veths as Calico's CNI plugin names them: cali + sha1("default.labctl-pod-X")[:11]
VETH = {"pod-a": "calib3b20792982", "pod-b": "cali71293c7c2a2"}


def test_api_pods_reads_name_ip_node_and_skips_nothing():
    got = pods.api_pods(KUBECTL_PODS)
    assert got == [
        {"name": "pod-a", "pod": "labctl-pod-a", "namespace": "default", "node": "w1", "ip": "192.168.77.5"},
        {"name": "pod-b", "pod": "labctl-pod-b", "namespace": "default", "node": "w2", "ip": "192.168.201.9"},
        {"name": "pod-c", "pod": "labctl-pod-c", "namespace": "default", "node": "", "ip": ""},
    ]


def test_sandbox_is_the_ready_one_of_that_pod():
    assert pods.sandbox_id(crictl_pods("labctl-pod-a", "5b0a3c9d8e7f"), "labctl-pod-a", "default") == "5b0a3c9d8e7f"
    assert pods.sandbox_id(crictl_pods("labctl-pod-a", "5b0a3c9d8e7f"), "labctl-pod-a", "kube-system") == ""
    assert pods.sandbox_id({"items": []}, "labctl-pod-a", "default") == ""


def test_netns_path_from_the_runtime_spec_or_the_pause_pid():
    doc = inspectp("5b0a3c9d8e7f", "labctl-pod-a", "192.168.77.5", NETNS["pod-a"])
    assert pods.netns_path(doc) == NETNS["pod-a"]
    del doc["info"]["runtimeSpec"]
    assert pods.netns_path(doc) == "/proc/4242/ns/net"
    assert pods.netns_path({"status": {}}) == ""


def test_route_dev_and_calicos_veth_name():
    # `ip -j route get 192.168.201.9` on w2
    got = [{"dst": "192.168.201.9", "dev": VETH["pod-b"], "prefsrc": "10.12.22.3", "flags": [], "uid": 0, "cache": []}]
    assert pods.route_dev(got) == VETH["pod-b"]
    assert pods.route_dev([]) == ""
    # upstream's own vector: libcalico-go/lib/backend/k8s/conversion/conversion_test.go (v3.32.1), pod
    # default/podA -> InterfaceName "cali7f94ce7c295"
    assert pods.calico_veth("default", "podA") == "cali7f94ce7c295"
    assert pods.calico_veth("default", "labctl-pod-a") == VETH["pod-a"]
    assert pods.calico_veth("default", "labctl-pod-b") == VETH["pod-b"]


# -- a fake cluster --------------------------------------------------------------------------------


def cluster_model(version: str):
    # labctl's plan (what a netns lab would have made) differs from the cluster's real pods on purpose
    planned = {
        "w1": [{"name": "pod-a", "ip": "192.168.1.2", "veth": "cali1111", "netns": "lc-x.w1.pod-a"}],
        "w2": [{"name": "pod-b", "ip": "192.168.2.2", "veth": "cali2222", "netns": "lc-x.w2.pod-b"}],
    }
    nodes = [
        {"name": "m", "role": "control-plane", "address": "10.12.22.1", "block": "192.168.0.0/24"},
        {"name": "w1", "address": "10.12.22.2", "block": "192.168.1.0/24", "pods": planned["w1"]},
        {"name": "w2", "address": "10.12.22.3", "block": "192.168.2.0/24", "pods": planned["w2"]},
    ]
    workloads = [
        {"name": p["name"], "node": n, "ip": p["ip"], "veth": p["veth"]} for n, ps in planned.items() for p in ps
    ]
    return lab_model(
        [n | {"interface": "ens192"} for n in nodes],
        provider="vm",
        network={"lan": "10.12.0.0/16", "gateway": "10.12.255.254"},
        calico={"version": version, "encapsulation": "IPIP", "tunnel_device": "tunl0"},
        workloads=workloads,
    )


def cluster_answers(proto: str) -> dict:
    """What each node answers, exactly; anything else is an unexpected command (exit 127)."""
    kubectl = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
    a, b = "192.168.77.5", "192.168.201.9"
    enter_a = f"nsenter --net={NETNS['pod-a']} "
    remote = {"dst": "192.168.201.0/26", "gateway": "10.12.22.3", "dev": "tunl0", "protocol": proto}
    return {
        "m": {
            f"{kubectl} get pods -A -l labctl.io/workload -o json": (0, KUBECTL_PODS),
            f"{kubectl} exec -n default labctl-pod-a -- ping -c1 -W1 {b}": (
                0,
                "PING 192.168.201.9 (192.168.201.9): 56 data bytes\n64 bytes from 192.168.201.9: seq=0 ttl=62 "
                "time=0.612 ms\n\n--- 192.168.201.9 ping statistics ---\n"
                "1 packets transmitted, 1 packets received, 0% packet loss\n"
                "round-trip min/avg/max = 0.612/0.612/0.612 ms\n",
            ),
        },
        "w1": {
            "crictl pods -o json": (0, crictl_pods("labctl-pod-a", "5b0a3c9d8e7f")),
            "crictl inspectp 5b0a3c9d8e7f": (0, inspectp("5b0a3c9d8e7f", "labctl-pod-a", a, NETNS["pod-a"])),
            f"ip -j route get {a}": (0, [{"dst": a, "dev": VETH["pod-a"], "prefsrc": "10.12.22.2", "flags": []}]),
            f"{enter_a}ip -j route get {b}": (
                0,
                [{"dst": b, "gateway": "169.254.1.1", "dev": "eth0", "prefsrc": a, "flags": [], "uid": 0}],
            ),
            f"{enter_a}ip -j route show match {b}": (0, [{"dst": "default", "gateway": "169.254.1.1", "dev": "eth0"}]),
            f"cat /proc/sys/net/ipv4/conf/{VETH['pod-a']}/proxy_arp": (0, "1\n"),
            f"ip -j route get {b} from {a} iif {VETH['pod-a']}": (
                0,
                [{"dst": b, "from": a, "iif": VETH["pod-a"], "gateway": "10.12.22.3", "dev": "tunl0", "flags": []}],
            ),
            f"ip -j route show match {b}": (
                0,
                [
                    {"dst": "default", "gateway": "10.12.255.254", "dev": "ens192"},
                    remote | {"flags": ["onlink"]},
                ],
            ),
            "ip -d -j link show tunl0": (
                0,
                [{"ifname": "tunl0", "mtu": 1480, "linkinfo": {"info_kind": "ipip", "info_data": {"proto": "ip"}}}],
            ),
            "ip -j route get 10.12.22.3": (0, [{"dst": "10.12.22.3", "dev": "ens192", "prefsrc": "10.12.22.2"}]),
        },
        "w2": {
            "crictl pods -o json": (0, crictl_pods("labctl-pod-b", "9e8d7c6b5a4f")),
            "crictl inspectp 9e8d7c6b5a4f": (0, inspectp("9e8d7c6b5a4f", "labctl-pod-b", b, NETNS["pod-b"])),
            f"ip -j route get {b}": (0, [{"dst": b, "dev": VETH["pod-b"], "prefsrc": "10.12.22.3", "flags": []}]),
            f"ip -j route get {b} from {a} iif tunl0": (
                0,
                [{"dst": b, "from": a, "iif": "tunl0", "dev": VETH["pod-b"], "flags": []}],
            ),
            f"ip -j route show match {b}": (
                0,
                [
                    {"dst": "default", "gateway": "10.12.255.254", "dev": "ens192"},
                    {"type": "blackhole", "dst": "192.168.201.0/26", "protocol": proto, "flags": []},
                    {"dst": b, "dev": VETH["pod-b"], "scope": "link", "flags": []},
                ],
            ),
        },
    }


class FakeCluster:
    def __init__(self, proto: str):
        self.answers, self.asked = cluster_answers(proto), []

    def shell(self, lab_dir, node, timeout=3.0):
        cluster = self

        class Shell:
            def run(self, command, timeout=30.0):
                cluster.asked.append((node.name, command))
                rc, out = cluster.answers[node.name].get(command, (127, None))
                if out is None:
                    return 127, "", f"unexpected command: {command}"
                return rc, out if isinstance(out, str) else json.dumps(out), ""

            def close(self):
                pass

        return Shell()


class FakeLab:
    name, dir = "x", None

    def __init__(self, model):
        self._model = model

    def model(self):
        return self._model


@pytest.mark.parametrize(("version", "proto"), [("v3.32.1", "bird"), ("v3.33.0", "80")])
def test_trace_on_a_cluster_follows_the_real_pods(monkeypatch, version, proto):
    cluster = FakeCluster(proto)
    monkeypatch.setattr(trace.live, "NodeShell", cluster.shell)
    res = trace.trace(FakeLab(cluster_model(version)), "pod-a", "pod-b")
    hops = res["hops"]
    assert [h["kind"] for h in hops] == ["pod", "veth", "route", "encap", "lan", "decap", "route", "deliver"], hops
    assert res["src"] == {"kind": "pod", "name": "pod-a", "ip": "192.168.77.5", "node": "w1"}
    assert res["dst"]["ip"] == "192.168.201.9" and res["dst"]["node"] == "w2"
    pod, veth, route_a, encap, _, decap, route_b, deliver = hops
    assert pod["get"]["gateway"] == "169.254.1.1"
    assert veth["device"] == VETH["pod-a"] and veth["proxy_arp"]
    assert (encap["encapsulation"], encap["outer_src"], encap["outer_dst"]) == ("IPIP", "10.12.22.2", "10.12.22.3")
    assert decap["at"] == "w2" and route_b["get"]["dev"] == VETH["pod-b"]
    assert deliver["at"] == "pod-b" and deliver["device"] == VETH["pod-b"]
    assert res["reached"] and res["ping"]["ok"] and res["ping"]["from"] == "pod-a"
    if proto == "80":  # v3.33: Felix programs the IPIP routes
        assert route_a["why"].startswith("Felix programmed it (proto 80)")
    else:  # up to v3.32: BIRD does, from what BGP taught it
        assert route_a["why"].startswith("learned over BGP") and "BIRD programmed it" in route_a["why"]
    # nothing of the plan's namespaces or veths was used
    assert not [c for _, c in cluster.asked if "lc-x." in c or "cali1111" in c or "cali2222" in c]


def test_a_sudo_user_reads_the_runtime_and_enters_namespaces_with_sudo():
    cluster = FakeCluster("bird")
    for node, answers in cluster.answers.items():  # kubectl and crictl need root; ip route get does not
        cluster.answers[node] = {
            (f"sudo -n {c}" if c.startswith(("kubectl", "crictl")) else c): a for c, a in answers.items()
        }
    model = cluster_model("v3.32.1")
    for n in model.nodes:
        n.ssh.user = "labctl"
    shells = {n.name: cluster.shell(None, n) for n in model.nodes}
    got = {p.name: p for p in pods.read(model, lambda node, cmd: shells[node].run(cmd))}
    assert got["pod-a"].enter() == f"sudo -n nsenter --net={NETNS['pod-a']} "
    assert (got["pod-a"].ip, got["pod-a"].node, got["pod-a"].veth) == ("192.168.77.5", "w1", VETH["pod-a"])
    assert (got["pod-b"].ip, got["pod-b"].node, got["pod-b"].veth) == ("192.168.201.9", "w2", VETH["pod-b"])
    assert "pod-c" not in got  # Pending: no node, no address
    node, cmd = pods.ping_command(model, got["pod-a"], "192.168.201.9")
    assert (node, cmd) == (
        "m",
        "sudo -n kubectl --kubeconfig /etc/kubernetes/admin.conf exec -n default labctl-pod-a -- "
        "ping -c1 -W1 192.168.201.9",
    )


def test_trace_names_a_workload_without_a_running_pod(monkeypatch):
    from labctl.errors import LabctlError

    cluster = FakeCluster("bird")
    monkeypatch.setattr(trace.live, "NodeShell", cluster.shell)
    model = cluster_model("v3.32.1")
    model.workloads.append(model.workloads[0].model_copy(update={"name": "pod-c"}))
    with pytest.raises(LabctlError, match="workload 'pod-c' has no running pod"):
        trace.trace(FakeLab(model), "pod-c", "pod-b")


def test_one_nodes_runtime_failing_hides_only_its_pods_namespace(monkeypatch):
    from labctl.errors import LabctlError

    cluster = FakeCluster("bird")
    cluster.answers["w2"]["crictl pods -o json"] = (1, "")  # e.g. containerd's socket is gone
    monkeypatch.setattr(trace.live, "NodeShell", cluster.shell)
    # pod-b's sandbox is not needed to reach it: its veth comes from w2's route
    assert trace.trace(FakeLab(cluster_model("v3.32.1")), "pod-a", "pod-b")["reached"]
    with pytest.raises(LabctlError, match="cannot enter pod-b's network namespace: w2: crictl pods -o json: exit 1"):
        trace.trace(FakeLab(cluster_model("v3.32.1")), "pod-b", "pod-a")


def test_a_node_to_node_trace_does_not_ask_the_api_server(monkeypatch):
    cluster = FakeCluster("bird")
    cluster.answers["w1"] |= {
        "ip -j route get 10.12.22.3": (0, [{"dst": "10.12.22.3", "dev": "ens192", "prefsrc": "10.12.22.2"}]),
        "ip -j route show match 10.12.22.3": (0, [{"dst": "10.12.0.0/16", "dev": "ens192", "protocol": "kernel"}]),
        "ip -d -j link show ens192": (0, [{"ifname": "ens192"}]),
        "ping -c1 -W1 10.12.22.3": (0, "1 packets transmitted, 1 received\n"),
    }
    cluster.answers["w2"]["ip -j route get 10.12.22.3"] = (0, [{"dst": "10.12.22.3", "type": "local", "dev": "lo"}])
    cluster.answers["w2"]["ip -j route show match 10.12.22.3"] = (0, [])
    monkeypatch.setattr(trace.live, "NodeShell", cluster.shell)
    res = trace.trace(FakeLab(cluster_model("v3.32.1")), "w1", "w2")
    assert res["reached"] and res["ping"]["ok"]
    assert "m" not in {node for node, _ in cluster.asked}


# -- who programs the pod routes, by version -------------------------------------------------------


def probe(routes: list) -> str:
    return "\n".join(["=====labctl:route", json.dumps(routes)])


# `ip -j -4 route show` on w1 of an IPIP cluster: up to v3.32 BIRD's routes (proto bird); from v3.33
# Felix's (protocol 80, which ip prints as a number: it has no name in rt_protos)
ROUTES = {
    "bird": [
        {"dst": "default", "gateway": "10.12.255.254", "dev": "ens192", "flags": []},
        {"type": "blackhole", "dst": "192.168.77.0/26", "protocol": "bird", "flags": []},
        {"dst": "192.168.77.5", "dev": VETH["pod-a"], "scope": "link", "flags": []},
        {"dst": "192.168.201.0/26", "gateway": "10.12.22.3", "dev": "tunl0", "protocol": "bird", "flags": ["onlink"]},
    ],
    "80": [
        {"dst": "default", "gateway": "10.12.255.254", "dev": "ens192", "flags": []},
        {"type": "blackhole", "dst": "192.168.77.0/26", "protocol": "80", "flags": []},
        {"dst": "192.168.77.5", "dev": VETH["pod-a"], "scope": "link", "flags": []},
        {"dst": "192.168.201.0/26", "gateway": "10.12.22.3", "dev": "tunl0", "protocol": "80", "flags": ["onlink"]},
    ],
}


@pytest.mark.parametrize(
    ("version", "encapsulation", "owner"),
    [
        ("v3.29.7", "IPIP", "bird"),
        ("v3.31.7", "IPIP", "bird"),
        ("v3.32.1", "IPIP", "bird"),
        ("v3.32.1", "IPIPCrossSubnet", "bird"),
        ("v3.33.0", "IPIP", "80"),
        ("v3.33.0", "IPIPCrossSubnet", "80"),
        ("v3.33.0", "None", "bird"),  # EnabledIPIPOnly: unencapsulated pools stay BIRD's
        ("v3.30.7", "VXLAN", "80"),
    ],
)
def test_route_owner_by_calico_version(version, encapsulation, owner):
    assert calico.route_owner(version, encapsulation) == owner


@pytest.mark.parametrize(
    ("version", "routes", "block"),
    [
        ("v3.32.1", "bird", "192.168.77.0/26"),
        ("v3.33.0", "80", "192.168.77.0/26"),
        ("v3.32.1", "80", ""),  # a proto 80 blackhole is not BIRD's: not this version's block
        ("v3.33.0", "bird", ""),  # BIRD's leftover (persist) after the move to Felix: not the block either
    ],
)
def test_the_clusters_own_block_follows_the_versions_route_owner(version, routes, block):
    model = cluster_model(version)
    f = parse_probe(NodeFacts("w1", "10.12.22.2", reachable=True), probe(ROUTES[routes]), calico.lab_protocols(model))
    assert f.block == block


def test_netns_labs_keep_the_emulations_protocols():
    # labctl's BIRD plays Calico there: its routes are proto bird whatever the version
    model = lab_model([{"name": "n1"}], calico={"version": "v3.32.1", "encapsulation": "IPIP"})
    assert calico.lab_protocols(model) == {"bird"}
    model = lab_model([{"name": "n1"}], calico={"version": "v3.32.1", "encapsulation": "VXLAN"})
    assert calico.lab_protocols(model) == {"bird", "80"}
