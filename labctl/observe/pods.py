"""Where a lab's workload pods really are: name, IP, node, network namespace and host-side veth.

The lab's provider says where pods live (Provider.emulated, asked only in `in_cluster`). On a netns
lab labctl made them, so the plan is the truth: namespaces `lc-<lab>.<node>.<pod>` and the planned
veths. On a cluster (vm, qemu) Kubernetes placed them, Calico IPAM addressed them and the container
runtime named their sandboxes, so they are read live: name, IP and node from the API server
(`kubectl get pods -o json` on the control plane), the sandbox's network namespace from the node's
runtime (`crictl pods` / `crictl inspectp`), and the host-side interface from the node's own route
to the pod IP (`ip -j route get`), which is what the kernel uses. The parsers here take the upstream
JSON formats as the tools print them."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from labctl.errors import LabctlError
from labctl.live import iproute
from labctl.live import nodes as live
from labctl.plan.model import LabModel
from labctl.spec.providers import traits

WORKLOAD_LABEL = "labctl.io/workload"  # every pod labctl creates on a cluster carries it

Run = Callable[[str, str], tuple[int, str, str]]  # (node, shell command) -> (rc, stdout, stderr)


@dataclass
class LivePod:
    name: str  # the topology's workload name
    ip: str
    node: str
    netns: str  # `ip netns` name (netns labs) or the sandbox's namespace path (/var/run/netns/cni-...)
    veth: str  # host end of the pod's eth0 on its node
    pod: str = ""  # the Kubernetes pod (cluster labs)
    namespace: str = ""
    sudo: str = ""  # the node's sudo prefix for entering the namespace
    error: str = ""  # why its sandbox could not be read (then netns is "")

    def enter(self) -> str:
        """Shell prefix that runs a node's tool (ip, ping) inside the pod's network namespace, on its node."""
        if self.netns.startswith("/"):
            return f"{self.sudo}nsenter --net={shlex.quote(self.netns)} "
        return f"{self.sudo}ip netns exec {shlex.quote(self.netns)} "


def in_cluster(model: LabModel) -> bool:
    """Whether the lab's pods are a real cluster's (read live) rather than labctl's plan."""
    return not traits(model.provider).emulated


def planned(model: LabModel) -> list[LivePod]:
    """netns labs: the pods as labctl made them."""
    return [LivePod(p.name, p.ip, n.name, p.netns, p.veth) for n in model.nodes for p in n.pods]


def ping_command(model: LabModel, pod: LivePod, dst: str) -> tuple[str, str]:
    """Where and how a ping from inside the pod runs: a cluster pod pings from its own container
    (kubectl exec through the control plane, as verify does: a node may have no ping of its own); a
    netns pod from its namespace on its node."""
    ping = f"ping -c1 -W1 {shlex.quote(dst)}"
    if pod.pod:
        cp = model.control_plane
        k = f"{live.sudo(cp)}{live.KUBECTL} exec -n {shlex.quote(pod.namespace)} {shlex.quote(pod.pod)}"
        return cp.name, f"{k} -- {ping}"
    return pod.node, pod.enter() + ping


# -- parsers (no I/O) ------------------------------------------------------------------------------


def api_pods(k8s: dict) -> list[dict]:
    """`kubectl get pods -o json` (a v1 List, or a mixed List with nodes and daemonsets): the pods labctl
    made, as {name, pod, namespace, node, ip}; a pod not yet scheduled has node "", one without an address ip ""."""
    out = []
    for item in k8s.get("items", []):
        meta = item.get("metadata") or {}
        labels = meta.get("labels") or {}
        if item.get("kind", "Pod") == "Pod" and WORKLOAD_LABEL in labels:
            out.append(
                {
                    "name": labels[WORKLOAD_LABEL],
                    "pod": meta.get("name", ""),
                    "namespace": meta.get("namespace", "default"),
                    "node": (item.get("spec") or {}).get("nodeName", ""),
                    "ip": (item.get("status") or {}).get("podIP", ""),
                }
            )
    return sorted(out, key=lambda w: w["name"])


def sandbox_id(crictl_pods: dict, pod: str, namespace: str) -> str:
    """`crictl pods -o json`: the id of the pod's ready sandbox ("" if it has none); a restarted pod
    leaves NotReady sandboxes of earlier attempts behind, so the newest ready one counts."""
    ready = [
        s
        for s in crictl_pods.get("items", [])
        if (s.get("metadata") or {}).get("name") == pod
        and (s.get("metadata") or {}).get("namespace") == namespace
        and s.get("state") == "SANDBOX_READY"
    ]
    ready.sort(key=lambda s: int(s.get("createdAt") or 0))
    return ready[-1]["id"] if ready else ""


def netns_path(inspectp: dict) -> str:
    """`crictl inspectp ID` (containerd): the sandbox's network namespace, from the OCI runtime spec it
    was started with (info.runtimeSpec.linux.namespaces, type network); else /proc/PID/ns/net of its pause."""
    info = inspectp.get("info") or {}
    spaces = ((info.get("runtimeSpec") or {}).get("linux") or {}).get("namespaces") or []
    path = next((s.get("path", "") for s in spaces if s.get("type") == "network"), "")
    if path:
        return path
    return f"/proc/{info['pid']}/ns/net" if info.get("pid") else ""


def route_dev(route_get: list) -> str:
    """`ip -j route get POD_IP` on the pod's node: the device the node sends to the pod on."""
    return (route_get[0] if route_get else {}).get("dev", "")


def calico_veth(namespace: str, pod: str, prefix: str = "cali") -> str:
    """The host-side veth name Calico's CNI plugin gives a Kubernetes pod: the prefix and the first 11
    hex digits of sha1("<namespace>.<pod>") (libcalico-go lib/backend/k8s/conversion/
    workload_endpoint_default.go, VethNameForWorkload, v3.32.1)."""
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


# -- reading a lab -----------------------------------------------------------------------------------


def _json(run: Run, node: str, cmd: str):
    rc, out, err = run(node, cmd)
    if rc != 0:
        raise LabctlError(f"{node}: {cmd}: {(err or out).strip() or f'exit {rc}'}")
    try:
        return json.loads(out) if out.strip() else {}
    except ValueError:
        raise LabctlError(f"{node}: {cmd}: not JSON: {out.strip()[:200]}") from None


def read(model: LabModel, run: Run) -> list[LivePod]:
    """The lab's pods, wherever its provider says they live; `run` reaches a node (trace's shells)."""
    if not in_cluster(model):
        return planned(model)
    cp = model.control_plane
    k8s = _json(run, cp.name, f"{live.sudo(cp)}{live.KUBECTL} get pods -A -l {WORKLOAD_LABEL} -o json")
    by_node: dict[str, list[dict]] = {}
    for p in api_pods(k8s):
        if p["node"] and p["ip"] and model.node(p["node"]):
            by_node.setdefault(p["node"], []).append(p)
    out = []
    for name, group in by_node.items():
        s = live.sudo(model.node(name))
        try:  # one node's runtime not answering must not hide the other nodes' pods
            sandboxes, error = _json(run, name, f"{s}crictl pods -o json"), ""
        except LabctlError as e:
            sandboxes, error = {}, str(e)
        for p in group:
            sid = sandbox_id(sandboxes, p["pod"], p["namespace"])
            netns, why = "", error or f"{name}: no ready sandbox of pod {p['namespace']}/{p['pod']} in `crictl pods`"
            if sid:
                try:
                    netns = netns_path(_json(run, name, f"{s}crictl inspectp {shlex.quote(sid)}"))
                except LabctlError as e:
                    why = str(e)
            dev = route_dev(iproute.loads(run(name, f"ip -j route get {shlex.quote(p['ip'])}")[1]))
            out.append(LivePod(p["name"], p["ip"], name, netns, dev, p["pod"], p["namespace"], s, "" if netns else why))
    return sorted(out, key=lambda p: p.name)
