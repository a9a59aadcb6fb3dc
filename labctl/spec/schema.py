"""The topology file's model (pydantic v2): its fields, their types and defaults, and its JSON Schema.

The checks that need more than a field's type are in rules*.py; `topology.load()` runs both."""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    WithJsonSchema,
)

from labctl.spec import providers

SUPPORTED_K8S = range(31, 36)  # 1.31 .. 1.35 (kubeadm v1beta4 exists from 1.31)
# Calico minor -> Kubernetes minors it is tested with (Calico docs, "System requirements")
CALICO_K8S = {29: range(29, 32), 30: range(31, 36), 31: range(32, 36), 32: range(32, 36)}
ENCAPSULATIONS = ("IPIP", "IPIPCrossSubnet", "VXLAN", "VXLANCrossSubnet", "None")
LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
HOSTNAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$")


def _ipv4(v: Any) -> IPv4Address:
    if not isinstance(v, str):
        raise ValueError("must be an IPv4 address string such as 10.12.22.1")
    try:
        return IPv4Address(v)
    except ValueError:
        raise ValueError(f"{v!r} is not an IPv4 address") from None


def _net(v: Any) -> IPv4Network:
    # host bits are accepted here and reported by topology._host_bits(), which can suggest the network
    if not isinstance(v, str):
        raise ValueError("must be a CIDR string such as 10.12.0.0/16")
    try:
        return IPv4Network(v, strict=False)
    except ValueError:
        raise ValueError(f"{v!r} is not an IPv4 CIDR") from None


def _provider(v: Any) -> str:
    if not isinstance(v, str) or v not in providers.REGISTRY:
        raise ValueError(f"{v!r} is not one of the providers: {', '.join(providers.names())}")
    return v


ProviderName = Annotated[
    str, PlainValidator(_provider), WithJsonSchema({"type": "string", "enum": list(providers.names())})
]
Address = Annotated[
    IPv4Address, PlainValidator(_ipv4), PlainSerializer(str), WithJsonSchema({"type": "string", "format": "ipv4"})
]
Network = Annotated[
    IPv4Network,
    PlainValidator(_net),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+\.\d+\.\d+\.\d+/\d+$"}),
]


def merge_ssh(defaults, node):
    """The node's ssh block over defaults.ssh, field by field: only what the node sets replaces
    the default (`jump: null` on a node turns the default jump off)."""
    if node is None:
        return defaults
    return defaults.model_copy(update={f: getattr(node, f) for f in node.model_fields_set})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Ssh(_Model):
    user: str = Field("root", description="SSH user; not root means tasks use become (sudo)")
    port: int = Field(22, ge=1, le=65535)
    key: str = Field("~/.ssh/id_ed25519", description="private key (vm provider; netns makes a lab key)")
    jump: str | None = Field(None, description="ProxyJump bastion, [user@]host[:port]")


class NetworkCfg(_Model):
    lan: Network = Field(description="the LAN all nodes share; netns creates it as a bridge")
    gateway: Address | None = Field(None, description="default: the last host address of lan")


class NetworkDef(_Model):
    lan: Network = Field(description="this network's LAN (netns: a bridge of its own)")
    gateway: Address | None = Field(None, description="default: the last host address of lan; a router's interface")
    asn: int | None = Field(None, description="AS of the nodes in this network (bgp: tor)")


class Router(_Model):
    interfaces: dict[str, Address] = Field(min_length=1, description="network name -> the router's address there")
    asn: int | None = Field(None, description="runs BGP (BIRD) with this AS: peers with the nodes (tor) and routers")


class Kubernetes(_Model):
    version: str = Field("1.34", description="1.MINOR or 1.MINOR.PATCH, 1.31-1.35")
    pod_subnet: Network = Field(default_factory=lambda: IPv4Network("192.168.0.0/16"))
    service_subnet: Network = Field(default_factory=lambda: IPv4Network("10.96.0.0/12"))


class Calico(_Model):
    version: str = Field("v3.30.7", description="vX.Y.Z, 3.29-3.32")
    encapsulation: Literal["IPIP", "IPIPCrossSubnet", "VXLAN", "VXLANCrossSubnet", "None"] = "IPIP"
    pool: Network | None = Field(None, description="default: kubernetes.pod_subnet; must lie inside it")
    block_size: int = Field(26, description="20..32")
    asn: int = Field(64512, description="BGP AS number of every node")
    nat_outgoing: bool = True
    route_reflectors: list[str] = Field(
        default_factory=list, description="nodes that reflect routes; empty: Calico's full node-to-node mesh"
    )
    rr_cluster_id: str = Field("244.0.0.1", description="route reflector cluster ID (an IPv4-formatted ID)")
    bgp: Literal["mesh", "reflectors", "tor", "none"] | None = Field(
        None, description="mesh (default) | reflectors (with route_reflectors) | tor (eBGP to the gateway) | none"
    )

    @property
    def design(self) -> str:
        return self.bgp or ("reflectors" if self.route_reflectors else "mesh")


class Defaults(_Model):
    interface: str = Field("eth0", description="the node's LAN NIC name")
    ssh: Ssh = Field(default_factory=Ssh)


class Proxy(_Model):
    http: str | None = Field(None, description="http_proxy for apt and containerd (vm)")
    https: str | None = Field(None, description="https_proxy for apt and containerd (vm)")
    no_proxy: list[str] = Field(default_factory=list, description="added to node addresses, pod and service subnets")


class Node(_Model):
    role: Literal["control-plane", "worker"]
    address: Address
    labels: dict[str, str] = Field(default_factory=dict)
    interface: str | None = Field(None, description="overrides defaults.interface")
    ssh: Ssh | None = Field(None, description="merged over defaults.ssh field by field (vm provider)")
    network: str | None = Field(None, description="with networks: the network the node is in")


class QemuMachine(_Model):
    cpus: int = Field(description="vCPUs, >= 1")
    memory: int = Field(description="MiB, 1024..65536 and at most the host's memory")


# the images labctl builds itself (labctl.providers.qemu.image.RECIPES); any other `qemu.image` is a file path
BUILT_IMAGES = ("debian-12", "debian-12-netns")


class Qemu(_Model):
    image: str = Field(
        "debian-12", description="debian-12 or debian-12-netns (labctl builds them), or a qcow2/raw cloud image path"
    )
    sha256: str | None = Field(None, description="required with an image path: its SHA-256")
    accel: Literal["auto", "kvm", "tcg"] = Field("auto", description="auto: KVM when a boot probe proves it works")
    internet: bool = Field(
        False, description="the lab proxy also relays HTTPS (CONNECT) anywhere: kubeadm and Calico need it"
    )
    control_plane: QemuMachine = Field(default_factory=lambda: QemuMachine(cpus=2, memory=2048))
    worker: QemuMachine = Field(default_factory=lambda: QemuMachine(cpus=1, memory=1536))


class Workload(_Model):
    name: str
    node_selector: dict[str, str] = Field(default_factory=dict)


class Impairment(_Model):
    node: str = Field(description="NODE or NODE:IFACE (default: the node's LAN NIC)")
    delay: str | None = Field(None, description="added delay, e.g. 50ms (tc netem)")
    jitter: str | None = Field(None, description="delay variation, e.g. 5ms (tc netem; needs delay)")
    loss: str | None = Field(None, description="random loss, e.g. 5% (tc netem)")
    rate: str | None = Field(None, description="rate limit, e.g. 10mbit (tc tbf)")


class ExecCheck(_Model):
    node: str
    command: str = Field(description="a shell command run on the node (as the login user, sudo when not root)")


class RouteCheck(_Model):
    node: str
    prefix: Network
    via: str | None = Field(None, description="the next hop: a node name (its tunnel or LAN address) or an IPv4")


class BgpCheck(_Model):
    node: str
    established: int = Field(description="exactly this many BGP sessions Established")


class LabCheck(_Model):
    name: str
    exec: ExecCheck | None = Field(None, description="passes when the command exits 0 (and its output matches)")
    reach: str | None = Field(None, description="'A -> B': A pings B (workload or node names)")
    route: RouteCheck | None = None
    bgp: BgpCheck | None = None
    expect: str | None = Field(None, description="exec: text the output must contain")
    expect_regex: str | None = Field(None, description="exec: a regular expression the output must match")
    wait: float = Field(0, description="seconds to wait before the first try")
    retries: int = Field(0, description="tries after a failing one, 1 s apart")
    timeout: float = Field(20, description="exec and reach: seconds a try may take before it is ended and fails")


class Topology(_Model):
    name: str = Field(description="lab name: ^[a-z][a-z0-9-]{0,19}$")
    provider: ProviderName = Field("netns", description="how the nodes exist: " + " | ".join(providers.names()))
    network: NetworkCfg | None = Field(None, description="one LAN for every node (or networks)")
    networks: dict[str, NetworkDef] | None = Field(None, description="several LANs joined by routers (or network)")
    routers: dict[str, Router] | None = Field(None, description="lab routers forwarding between networks")
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    calico: Calico = Field(default_factory=Calico)
    defaults: Defaults = Field(default_factory=Defaults)
    nodes: dict[str, Node] = Field(min_length=1)
    workloads: list[Workload] | None = Field(None, description="default: one pod per node")
    proxy: Proxy | None = Field(None, description="vm: HTTP(S) proxy for apt and containerd")
    qemu: Qemu | None = Field(None, description="provider qemu: image, acceleration, vCPUs and memory per role")
    impairments: list[Impairment] | None = Field(None, description="tc netem/tbf on node interfaces, applied by up")
    checks: list[LabCheck] | None = Field(None, description="the lab's own checks, run by `labctl verify`")
    _plan: tuple | None = PrivateAttr(None)  # (plan, problems), see plan()

    @property
    def gateway(self) -> IPv4Address:
        if self.network is None:  # several networks: the first one's (each node uses its own)
            return next(iter(self.lans.values())).gateway
        return self.network.gateway or self.network.lan.broadcast_address - 1

    @property
    def lans(self) -> dict[str, Lan]:
        """With `networks`: each network's LAN, gateway (a router's), AS, and the host's address in it."""
        out = {}
        for name, n in (self.networks or {}).items():
            gw = n.gateway or n.lan.broadcast_address - 1
            last = n.lan.broadcast_address - 1
            # the host keeps an address on each bridge (SSH reaches the nodes directly); the gateway is the router's
            host = last - 1 if gw == last else last
            out[name] = Lan(name, n.lan, gw, n.asn, host)
        return out

    @property
    def pool(self) -> IPv4Network:
        return self.calico.pool or self.kubernetes.pod_subnet


@dataclass(frozen=True)
class Lan:
    name: str
    lan: IPv4Network
    gateway: IPv4Address
    asn: int | None
    host: IPv4Address


def schema() -> dict:
    s = Topology.model_json_schema()
    s["anyOf"] = [{"required": ["network"]}, {"required": ["networks"]}]  # one LAN, or several with routers
    return s
