"""Every document labctl renders for a vm lab, checked offline against the upstream APIs.

The whitelists below are the JSON field paths of the upstream Go types (`a.b[].c`: `[]` is a list
item, `*` any map key), copied from the upstream sources named above each one. They hold the
fields labctl renders plus their documented siblings, so a typo, a field from another API version
(v1beta3 `kubeletExtraArgs` as a map, a `timeoutForControlPlane` under apiServer) or a field of
the wrong object fails here instead of in `kubeadm init` or the Tigera operator on a real VM.
Nothing here touches the network.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from labctl.outputs import render
from labctl.plan import layout
from labctl.spec import schedule, topology

pytestmark = pytest.mark.unit

VM_CLOUD = ROOT / "inventories" / "vm-cloud" / "topology.yml"
TWO_RACKS_VM = ROOT / "inventories" / "two-racks-vm" / "topology.yml"

# ---------------------------------------------------------------------------------------------
# kubeadm.k8s.io/v1beta4
# Source: kubernetes/kubernetes cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go
#   (InitConfiguration, ClusterConfiguration, JoinConfiguration, NodeRegistrationOptions,
#    APIEndpoint, Networking, Discovery, BootstrapTokenDiscovery, FileDiscovery, Arg,
#    ControlPlaneComponent, APIServer, DNS, Proxy, Etcd/LocalEtcd/ExternalEtcd, Timeouts, Patches)
# Taints: kubernetes/kubernetes staging/src/k8s.io/api/core/v1/types.go (Taint: key, value, effect, timeAdded)
# ---------------------------------------------------------------------------------------------
_ARG = ("name", "value")  # type Arg struct { Name `json:"name"`; Value `json:"value"` }
_TIMEOUTS = (
    "controlPlaneComponentHealthCheck",
    "kubeletHealthCheck",
    "kubernetesAPICall",
    "etcdAPICall",
    "tlsBootstrap",
    "discovery",
    "upgradeManifests",
)


def _node_registration(prefix: str) -> set[str]:
    p = f"{prefix}.nodeRegistration"
    return {
        p,
        f"{p}.name",
        f"{p}.criSocket",
        f"{p}.taints",
        *(f"{p}.taints[].{k}" for k in ("key", "value", "effect", "timeAdded")),
        f"{p}.kubeletExtraArgs",
        *(f"{p}.kubeletExtraArgs[].{k}" for k in _ARG),
        f"{p}.ignorePreflightErrors",
        f"{p}.imagePullPolicy",
        f"{p}.imagePullSerial",
    }


def _component(p: str) -> set[str]:
    return {
        p,
        f"{p}.extraArgs",
        *(f"{p}.extraArgs[].{k}" for k in _ARG),
        f"{p}.extraVolumes",
        *(f"{p}.extraVolumes[].{k}" for k in ("name", "hostPath", "mountPath", "readOnly", "pathType")),
        f"{p}.extraEnvs",
        f"{p}.extraEnvs[].name",
        f"{p}.extraEnvs[].value",
    }


def _common(prefix: str = "") -> set[str]:
    return {
        "apiVersion",
        "kind",
        "dryRun",
        "skipPhases",
        "patches",
        "patches.directory",
        "timeouts",
        *(f"timeouts.{k}" for k in _TIMEOUTS),
    } | _node_registration(prefix)


def _strip(paths: set[str]) -> set[str]:
    return {p.lstrip(".") for p in paths}


INIT_CONFIGURATION = _strip(
    _common()
    | {
        "bootstrapTokens",
        *(f"bootstrapTokens[].{k}" for k in ("token", "description", "ttl", "expires", "usages", "groups")),
        "localAPIEndpoint",
        "localAPIEndpoint.advertiseAddress",
        "localAPIEndpoint.bindPort",
        "certificateKey",
    }
)

CLUSTER_CONFIGURATION = (
    {
        "apiVersion",
        "kind",
        "etcd",
        "etcd.local",
        *(
            f"etcd.local.{k}"
            for k in (
                "imageRepository",
                "imageTag",
                "dataDir",
                "extraArgs",
                "extraEnvs",
                "serverCertSANs",
                "peerCertSANs",
            )
        ),
        *(f"etcd.local.extraArgs[].{k}" for k in _ARG),
        "etcd.external",
        *(f"etcd.external.{k}" for k in ("endpoints", "caFile", "certFile", "keyFile")),
        "networking",
        "networking.serviceSubnet",
        "networking.podSubnet",
        "networking.dnsDomain",
        "kubernetesVersion",
        "controlPlaneEndpoint",
        "apiServer.certSANs",
        "dns",
        "dns.imageRepository",
        "dns.imageTag",
        "dns.disabled",
        "proxy",
        "proxy.disabled",
        "certificatesDir",
        "imageRepository",
        "featureGates",
        "featureGates.*",
        "clusterName",
        "encryptionAlgorithm",
        "certificateValidityPeriod",
        "caCertificateValidityPeriod",
    }
    | _component("apiServer")
    | _component("controllerManager")
    | _component("scheduler")
)

JOIN_CONFIGURATION = _strip(
    _common()
    | {
        "caCertPath",
        "discovery",
        "discovery.bootstrapToken",
        "discovery.bootstrapToken.token",
        "discovery.bootstrapToken.apiServerEndpoint",
        "discovery.bootstrapToken.caCertHashes",
        "discovery.bootstrapToken.unsafeSkipCAVerification",
        "discovery.file",
        "discovery.file.kubeConfigPath",
        "discovery.tlsBootstrapToken",
        "controlPlane",
        "controlPlane.localAPIEndpoint",
        "controlPlane.localAPIEndpoint.advertiseAddress",
        "controlPlane.localAPIEndpoint.bindPort",
        "controlPlane.certificateKey",
    }
)

# EncryptionAlgorithmType constants in the same types.go
KUBEADM_ENCRYPTION_ALGORITHMS = {"ECDSA-P256", "RSA-2048", "RSA-3072", "RSA-4096"}

# ---------------------------------------------------------------------------------------------
# kubelet.config.k8s.io/v1beta1 KubeletConfiguration
# Source: kubernetes/kubernetes staging/src/k8s.io/kubelet/config/v1beta1/types.go
#   (`CgroupDriver string json:"cgroupDriver,omitempty"`: "cgroupfs" or "systemd").
# A subset of the ~100 fields: the ones a kubeadm lab sets; anything else is a review, not a typo.
# ---------------------------------------------------------------------------------------------
KUBELET_CONFIGURATION = {
    "apiVersion",
    "kind",
    "cgroupDriver",
    "cgroupsPerQOS",
    "containerRuntimeEndpoint",
    "failSwapOn",
    "clusterDNS",
    "clusterDomain",
    "maxPods",
    "podCIDR",
    "resolvConf",
    "rotateCertificates",
    "serverTLSBootstrap",
    "staticPodPath",
    "systemReserved",
    "systemReserved.*",
    "kubeReserved",
    "kubeReserved.*",
}
KUBELET_CGROUP_DRIVERS = {"systemd", "cgroupfs"}

# ---------------------------------------------------------------------------------------------
# operator.tigera.io/v1 Installation and APIServer
# Source: tigera/operator api/v1/installation_types.go (InstallationSpec, CalicoNetworkSpec, IPPool,
#   NodeAddressAutodetection, BGPOption, EncapsulationType, NATOutgoingType, KubernetesAutodetectionMethod)
# ipPools[].name: projectcalico/calico manifests/custom-resources.yaml (`- name: default-ipv4-ippool`,
#   Calico 3.29+; the operator names the pool it creates after it)
# APIServer: tigera/operator api/v1/apiserver_types.go (APIServerSpec.apiServerDeployment)
# ---------------------------------------------------------------------------------------------
_AUTODETECT = ("firstFound", "kubernetes", "interface", "skipInterface", "canReach", "cidrs")
INSTALLATION = {
    "apiVersion",
    "kind",
    "metadata",
    "metadata.name",
    "metadata.labels",
    "metadata.labels.*",
    "metadata.annotations",
    "metadata.annotations.*",
    "spec",
    *(
        f"spec.{k}"
        for k in (
            "variant",
            "registry",
            "imagePath",
            "imagePrefix",
            "kubernetesProvider",
            "controlPlaneReplicas",
            "nodeMetricsPort",
            "typhaMetricsPort",
            "flexVolumePath",
            "fipsMode",
            "calicoNetwork",
        )
    ),
    *(
        f"spec.calicoNetwork.{k}"
        for k in (
            "linuxDataplane",
            "bgp",
            "ipPools",
            "mtu",
            "nodeAddressAutodetectionV4",
            "nodeAddressAutodetectionV6",
            "hostPorts",
            "multiInterfaceMode",
            "containerIPForwarding",
        )
    ),
    *(
        f"spec.calicoNetwork.ipPools[].{k}"
        for k in ("name", "cidr", "encapsulation", "natOutgoing", "nodeSelector", "blockSize", "disableBGPExport")
    ),
    *(f"spec.calicoNetwork.nodeAddressAutodetectionV4.{k}" for k in _AUTODETECT),
    *(f"spec.calicoNetwork.nodeAddressAutodetectionV6.{k}" for k in _AUTODETECT),
}
API_SERVER = {"apiVersion", "kind", "metadata", "metadata.name", "spec", "spec.apiServerDeployment"}

CALICO_BGP = {"Enabled", "Disabled"}  # BGPOption
CALICO_ENCAPSULATIONS = {"IPIP", "IPIPCrossSubnet", "VXLAN", "VXLANCrossSubnet", "None"}  # EncapsulationType
CALICO_NAT_OUTGOING = {"Enabled", "Disabled"}  # NATOutgoingType
CALICO_K8S_AUTODETECT = {"NodeInternalIP"}  # KubernetesAutodetectionMethod

# ---------------------------------------------------------------------------------------------
# projectcalico.org/v3 BGPConfiguration, BGPPeer, Node (served by the Calico API server)
# Source: projectcalico/api pkg/apis/projectcalico/v3/bgpconfig.go (BGPConfigurationSpec, ServiceClusterIPBlock,
#   Community, PrefixAdvertisement), bgppeer.go (BGPPeerSpec), node.go (NodeSpec, NodeBGPSpec, OrchRef,
#   NodeWireguardSpec, NodeAddress); ObjectMeta from k8s.io/apimachinery (name, labels, annotations)
# ---------------------------------------------------------------------------------------------
_META = {"apiVersion", "kind", "metadata", "metadata.name", "metadata.labels", "metadata.labels.**"}
_META |= {"metadata.annotations", "metadata.annotations.**"}
BGP_CONFIGURATION = _META | {
    "spec",
    *(
        f"spec.{k}"
        for k in (
            "logSeverityScreen",
            "nodeToNodeMeshEnabled",
            "asNumber",
            "listenPort",
            "nodeMeshPassword",
            "nodeMeshMaxRestartTime",
            "bindMode",
            "ignoredInterfaces",
            "localWorkloadPeeringIPV4",
            "localWorkloadPeeringIPV6",
            "communities",
            "communities[].name",
            "communities[].value",
            "prefixAdvertisements",
            "prefixAdvertisements[].cidr",
            "prefixAdvertisements[].communities",
            "serviceClusterIPs",
            "serviceClusterIPs[].cidr",
            "serviceExternalIPs",
            "serviceExternalIPs[].cidr",
            "serviceLoadBalancerIPs",
            "serviceLoadBalancerIPs[].cidr",
        )
    ),
}
BGP_PEER = _META | {
    "spec",
    *(
        f"spec.{k}"
        for k in (
            "node",
            "peerIP",
            "asNumber",
            "nodeSelector",
            "peerSelector",
            "keepOriginalNextHop",
            "nextHopMode",
            "password",
            "sourceAddress",
            "failureDetectionMode",
            "restartMode",
            "maxRestartTime",
            "birdGatewayMode",
            "numAllowedLocalASNumbers",
            "localASNumber",
            "ttlSecurity",
            "filters",
            "localWorkloadSelector",
            "reachableBy",
            "externalNetwork",
        )
    ),
}
CALICO_NODE = _META | {
    "spec",
    "spec.bgp",
    *(f"spec.bgp.{k}" for k in ("ipv4Address", "ipv6Address", "ipv4IPIPTunnelAddr", "asNumber")),
    "spec.bgp.routeReflectorClusterID",
    *(f"spec.{k}" for k in ("ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr", "ipv6VXLANTunnelAddr")),
    *(f"spec.{k}" for k in ("vxlanTunnelMACAddrV6", "orchRefs", "wireguard", "addresses")),
}

WHITELISTS: dict[tuple[str, str], set[str]] = {
    ("projectcalico.org/v3", "BGPConfiguration"): BGP_CONFIGURATION,
    ("projectcalico.org/v3", "BGPPeer"): BGP_PEER,
    ("projectcalico.org/v3", "Node"): CALICO_NODE,
    ("kubeadm.k8s.io/v1beta4", "InitConfiguration"): INIT_CONFIGURATION,
    ("kubeadm.k8s.io/v1beta4", "ClusterConfiguration"): CLUSTER_CONFIGURATION,
    ("kubeadm.k8s.io/v1beta4", "JoinConfiguration"): JOIN_CONFIGURATION,
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"): KUBELET_CONFIGURATION,
    ("operator.tigera.io/v1", "Installation"): INSTALLATION,
    ("operator.tigera.io/v1", "APIServer"): API_SERVER,
}

JOIN_TOKEN = "{{ kubeadm_join_token }}"
CA_HASH = "{{ kubeadm_ca_cert_hash }}"
# a real bootstrap token ([a-z0-9]{6}.[a-z0-9]{16}) or CA pin must never reach the lab dir
REAL_TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
REAL_HASH = re.compile(r"sha256:[0-9a-f]{64}")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ansible's `!unsafe` strings (the inventory may carry them)."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def key_paths(node, prefix: str = ""):
    """Every mapping key as a dotted path; list items add `[]`."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{prefix}.{k}" if prefix else str(k)
            yield p
            yield from key_paths(v, p)
    elif isinstance(node, list):
        for item in node:
            yield from key_paths(item, prefix + "[]")


def _pattern(entry: str) -> re.Pattern:
    # `**`: a map key that may hold dots (label and annotation keys: labctl.io/peer)
    return re.compile(re.escape(entry).replace(r"\*\*", r"[^\[\]]+").replace(r"\*", r"[^.\[\]]+") + r"\Z")


def unknown_paths(doc: dict, whitelist: set[str]) -> list[str]:
    patterns = [_pattern(w) for w in whitelist if "*" in w]
    return [p for p in key_paths(doc) if p not in whitelist and not any(r.match(p) for r in patterns)]


def variant(tmp_path: Path, name: str, **changes) -> Path:
    """A copy of the vm-cloud topology with `section.field` values replaced."""
    data = yaml.safe_load(VM_CLOUD.read_text())
    for dotted, value in changes.items():
        section, field = dotted.split("__")
        data.setdefault(section, {})[field] = value
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


CASES = {
    "vm-cloud": {},
    "vxlan-1.31": {"kubernetes__version": "1.31", "calico__encapsulation": "VXLAN"},
    "none-1.35": {"kubernetes__version": "1.35", "calico__encapsulation": "None"},
    "patch-1.34.2": {"kubernetes__version": "1.34.2", "calico__encapsulation": "IPIPCrossSubnet"},
    "small-pool-no-nat": {
        "kubernetes__pod_subnet": "10.244.0.0/16",
        "calico__pool": "10.244.128.0/17",
        "calico__block_size": 26,
        "calico__nat_outgoing": False,
        "calico__encapsulation": "VXLANCrossSubnet",
    },
}


class Lab:
    def __init__(self, src: Path, out: Path):
        self.src = src
        self.t = topology.load(src)
        self.plan = schedule.plan(self.t)
        self.out = out
        self.files = render.render(self.plan, layout.LabDir(out), src)
        self.cp = next(n for n in self.plan.nodes if n.role == "control-plane")
        self.workers = [n for n in self.plan.nodes if n.role == "worker"]

    def docs(self, rel: str) -> list[dict]:
        return [d for d in yaml.load_all((self.out / rel).read_text(), Loader=_Loader) if d is not None]

    def api_docs(self) -> dict[str, list[dict]]:
        """Every rendered YAML file -> its documents that carry an apiVersion."""
        out = {}
        for f in self.files:
            if f.suffix in (".yaml", ".yml"):
                docs = [d for d in yaml.load_all(f.read_text(), Loader=_Loader) if isinstance(d, dict)]
                api = [d for d in docs if "apiVersion" in d or "kind" in d]
                if api:
                    out[str(f.relative_to(self.out))] = api
        return out


# the seed's second case (`networks:`, bgp: tor) and its variants: (topology, changes)
RACK_CASES = {
    "two-racks-tor": {},
    "two-racks-vxlan-cross-mesh": {"calico__encapsulation": "VXLANCrossSubnet", "calico__bgp": "mesh"},
    "two-racks-vxlan-none": {"calico__encapsulation": "VXLAN", "calico__bgp": "none"},
}


def rack_variant(tmp_path: Path, name: str, **changes) -> Path:
    data = yaml.safe_load(TWO_RACKS_VM.read_text())
    for dotted, value in changes.items():
        section, field = dotted.split("__")
        data[section][field] = value
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(params=list(CASES) + list(RACK_CASES))
def lab(request, tmp_path) -> Lab:
    if request.param in RACK_CASES:
        return Lab(rack_variant(tmp_path, request.param, **RACK_CASES[request.param]), tmp_path / "lab")
    changes = CASES[request.param]
    src = VM_CLOUD if not changes else variant(tmp_path, request.param, **changes)
    return Lab(src, tmp_path / "lab")


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------
def test_variants_are_vm_labs(lab):
    assert lab.t.provider == "vm"


def test_api_version_and_kind_pairs_are_exactly_the_expected_ones(lab):
    want = {
        "kubeadm/init.yaml": [
            ("kubeadm.k8s.io/v1beta4", "InitConfiguration"),
            ("kubeadm.k8s.io/v1beta4", "ClusterConfiguration"),
            ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
        ],
        "calico/custom-resources.yaml": [
            ("operator.tigera.io/v1", "Installation"),
            ("operator.tigera.io/v1", "APIServer"),
        ],
    }
    for w in lab.workers:
        want[f"kubeadm/join-{w.name}.yaml"] = [("kubeadm.k8s.io/v1beta4", "JoinConfiguration")]
    if lab.t.calico.design == "tor":
        want["calico/bgp.yaml"] = [("projectcalico.org/v3", "BGPConfiguration")]
        want["calico/bgp.yaml"] += [("projectcalico.org/v3", "BGPPeer")] * len(lab.t.networks)
        want["calico/nodes.yaml"] = [("projectcalico.org/v3", "Node")] * len(lab.t.nodes)
    got = {rel: [(d.get("apiVersion"), d.get("kind")) for d in docs] for rel, docs in lab.api_docs().items()}
    assert got == want


def test_every_key_path_is_an_upstream_field(lab):
    for rel, docs in lab.api_docs().items():
        for d in docs:
            bad = unknown_paths(d, WHITELISTS[(d["apiVersion"], d["kind"])])
            assert not bad, f"{rel}: {d['kind']}: not in the upstream API: {bad}"


def test_the_whitelist_catches_wrong_fields():
    """The checker is not vacuous: v1beta3 shapes and typos are reported."""
    v1beta3 = {"apiVersion": "x", "kind": "y", "nodeRegistration": {"kubeletExtraArgs": {"node-ip": "10.0.0.1"}}}
    assert unknown_paths(v1beta3, INIT_CONFIGURATION) == ["nodeRegistration.kubeletExtraArgs.node-ip"]
    typo = {"spec": {"calicoNetwork": {"ipPools": [{"cidr": "10.0.0.0/16", "ipipMode": "Always"}]}}}
    assert unknown_paths(typo, INSTALLATION) == ["spec.calicoNetwork.ipPools[].ipipMode"]
    assert unknown_paths({"apiServer": {"timeoutForControlPlane": "4m"}}, CLUSTER_CONFIGURATION) == [
        "apiServer.timeoutForControlPlane"
    ]
    assert unknown_paths({"featureGates": {"Foo": True}}, CLUSTER_CONFIGURATION) == []


def _kubelet_extra_args(node_registration: dict) -> list[dict]:
    args = node_registration["kubeletExtraArgs"]
    assert isinstance(args, list), "v1beta4 kubeletExtraArgs is a list of {name, value}"
    for a in args:
        assert isinstance(a, dict) and set(a) == {"name", "value"}, a
        assert isinstance(a["name"], str) and isinstance(a["value"], str), a
    return args


def test_init_configuration(lab):
    init, cluster, kubelet = lab.docs("kubeadm/init.yaml")
    cp = lab.cp
    assert init["localAPIEndpoint"] == {"advertiseAddress": str(cp.address), "bindPort": 6443}
    nr = init["nodeRegistration"]
    assert nr["name"] == cp.name
    assert nr["criSocket"].startswith("unix:///")
    assert {a["name"]: a["value"] for a in _kubelet_extra_args(nr)} == {"node-ip": str(cp.address)}
    assert kubelet["cgroupDriver"] in KUBELET_CGROUP_DRIVERS
    assert kubelet["cgroupDriver"] == "systemd"  # containerd is configured with SystemdCgroup = true


def test_cluster_configuration(lab):
    cluster = lab.docs("kubeadm/init.yaml")[1]
    # never `stable-1.34` (kubeadm would ask dl.k8s.io at init, and could pick another patch than the
    # installed kubelet): the control_plane role fills in `kubeadm version -o short`
    assert cluster["kubernetesVersion"] == "{{ kubeadm_kubernetes_version }}"
    assert cluster["controlPlaneEndpoint"] == f"{lab.cp.address}:6443"
    host, port = cluster["controlPlaneEndpoint"].rsplit(":", 1)
    ipaddress.IPv4Address(host)
    assert port == "6443"
    net = cluster["networking"]
    pod = ipaddress.ip_network(net["podSubnet"])
    svc = ipaddress.ip_network(net["serviceSubnet"])
    assert pod == lab.t.kubernetes.pod_subnet and svc == lab.t.kubernetes.service_subnet
    assert not pod.overlaps(svc)
    assert cluster.get("clusterName") == lab.t.name
    # labctl leaves it to kubeadm's default (the branch that read it when present never ran)
    assert cluster.get("encryptionAlgorithm", "RSA-2048") in KUBEADM_ENCRYPTION_ALGORITHMS


def test_join_configurations_carry_placeholders_only(lab):
    endpoint = f"{lab.cp.address}:6443"
    for w in lab.workers:
        (join,) = lab.docs(f"kubeadm/join-{w.name}.yaml")
        bt = join["discovery"]["bootstrapToken"]
        assert bt["apiServerEndpoint"] == endpoint
        assert bt["token"] == JOIN_TOKEN
        assert bt["caCertHashes"] == [CA_HASH]
        assert "unsafeSkipCAVerification" not in bt
        nr = join["nodeRegistration"]
        assert nr["name"] == w.name
        assert nr["criSocket"].startswith("unix:///")
        assert {a["name"]: a["value"] for a in _kubelet_extra_args(nr)} == {"node-ip": str(w.address)}
    for f in lab.files:
        text = f.read_text()
        assert not REAL_TOKEN.search(text), f"{f}: looks like a real bootstrap token"
        assert not REAL_HASH.search(text), f"{f}: looks like a real CA hash"


def test_calico_installation(lab):
    inst, apiserver = lab.docs("calico/custom-resources.yaml")
    assert inst["metadata"]["name"] == "default"  # "It must be named default" (installation_types.go)
    assert apiserver["metadata"]["name"] == "default"
    net = inst["spec"]["calicoNetwork"]
    assert net["bgp"] in CALICO_BGP
    (pool,) = net["ipPools"]
    assert pool["encapsulation"] in CALICO_ENCAPSULATIONS
    assert pool["encapsulation"] == lab.t.calico.encapsulation
    if pool["encapsulation"].startswith("IPIP"):
        assert net["bgp"] == "Enabled", "IPIP routes are distributed by BGP"
    assert pool["natOutgoing"] in CALICO_NAT_OUTGOING
    assert pool["natOutgoing"] == ("Enabled" if lab.t.calico.nat_outgoing else "Disabled")
    assert isinstance(pool["blockSize"], int) and not isinstance(pool["blockSize"], bool)
    assert 20 <= pool["blockSize"] <= 32
    assert pool["blockSize"] == lab.t.calico.block_size
    assert isinstance(pool["name"], str) and pool["name"]
    assert pool["nodeSelector"] == "all()"
    cidr = ipaddress.ip_network(pool["cidr"])
    pod_subnet = ipaddress.ip_network(lab.docs("kubeadm/init.yaml")[1]["networking"]["podSubnet"])
    assert cidr.subnet_of(pod_subnet), f"pool {cidr} must lie inside podSubnet {pod_subnet}"
    assert cidr.prefixlen <= pool["blockSize"]
    assert net["nodeAddressAutodetectionV4"] == {"kubernetes": "NodeInternalIP"}
    assert net["nodeAddressAutodetectionV4"]["kubernetes"] in CALICO_K8S_AUTODETECT


def test_node_labels_match_the_topology(lab):
    (labels,) = lab.docs("node-labels.yaml")
    assert labels == {name: (node.labels or {}) for name, node in lab.t.nodes.items()}
    assert labels == {n.name: n.labels for n in lab.plan.nodes}


# Calico's selector grammar, the part labctl writes: `<label> == '<value>'` (libcalico-go lib/selector)
_SELECTOR_EQ = re.compile(r"^([a-zA-Z0-9_./-]+) == '([^']*)'$")


def _inventory_labels(lab: Lab) -> dict[str, dict]:
    inv = yaml.load((lab.out / "ansible-inventory.yml").read_text(), Loader=_Loader)["all"]["children"]
    hosts = inv["kube_control_plane"]["hosts"] | (inv["kube_node"]["hosts"] or {})
    return {name: h["node_labels"] for name, h in hosts.items()}


def test_tor_peers_each_rack_with_its_gateway_in_the_routers_as(lab):
    """bgp: tor as Calico does it: mesh off, one BGPPeer per rack selecting the nodes the node_labels
    role labels with that rack, peering with the rack's gateway in its router's AS; each node in its rack's AS."""
    t = lab.t
    if t.calico.design != "tor":
        assert not (lab.out / "calico" / "nodes.yaml").exists()
        assert not (lab.out / "calico" / "bgp.yaml").exists()
        return
    conf, *peers = lab.docs("calico/bgp.yaml")
    assert conf["kind"] == "BGPConfiguration" and conf["metadata"]["name"] == "default"
    assert conf["spec"]["nodeToNodeMeshEnabled"] is False
    labels = _inventory_labels(lab)
    gateway_asn = {
        str(addr): r.asn
        for r in t.routers.values()
        for net, addr in r.interfaces.items()
        if addr == t.lans[net].gateway
    }
    selected: dict[str, str] = {}
    for p in peers:
        spec = p["spec"]
        key, value = _SELECTOR_EQ.match(spec["nodeSelector"]).groups()
        assert value in t.networks and "peerSelector" not in spec and "node" not in spec
        assert spec["peerIP"] == str(t.lans[value].gateway)
        assert spec["asNumber"] == gateway_asn[spec["peerIP"]] and isinstance(spec["asNumber"], int)
        assert p["metadata"]["labels"] == {"labctl.io/peer": "tor"}  # the role drops stale ones by it
        for name, node_labels in labels.items():
            if node_labels.get(key) == value:
                selected[name] = value
    assert selected == {name: n.network for name, n in t.nodes.items()}, "every node peers with its own rack"
    asn = {d["metadata"]["name"]: d["spec"]["bgp"]["asNumber"] for d in lab.docs("calico/nodes.yaml")}
    assert asn == {name: t.networks[n.network].asn for name, n in t.nodes.items()}
    assert len(set(asn.values())) > 1, "the sample has a rack AS per rack"


def test_rack_labs_keep_the_cross_subnet_mode_and_render_no_router_to_reach(lab):
    # every variant, flat or in racks: a vm lab's routers are the user's, never one labctl builds
    (inst, _) = lab.docs("calico/custom-resources.yaml")
    (pool,) = inst["spec"]["calicoNetwork"]["ipPools"]
    assert pool["encapsulation"] == lab.t.calico.encapsulation
    assert inst["spec"]["calicoNetwork"]["bgp"] == ("Disabled" if lab.t.calico.design == "none" else "Enabled")
    inv = yaml.load((lab.out / "ansible-inventory.yml").read_text(), Loader=_Loader)
    assert "lab_routers" not in inv["all"]["children"], "a vm lab's routers are the user's: never a host of ours"
    data = json.loads((lab.out / "topology-data.json").read_text())
    assert data.get("routers", []) == []  # a flat lab's model has no routers key at all
