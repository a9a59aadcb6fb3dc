"""The topology file: its model (pydantic v2), its checks, and what follows from it.

`load()` returns a `Topology` or raises `TopologyError` with one `FILE:LINE: path: message (hint)`
line per problem. `plan()` derives everything a lab needs that the user did not write: node
blocks and tunnel IPs, pod addresses and where each workload lands.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
)

from labctl.errors import TopologyError
from labctl.spec import providers, yamlsrc
from labctl.spec.yamlsrc import Problem

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
    # host bits are accepted here and reported by _host_bits(), which can suggest the network
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


# --- errors from pydantic, one line per field ---------------------------------------------

_TYPE_WORDS = {
    "string_type": ("must be a string", "quote it"),
    "int_type": ("must be an integer", None),
    "bool_type": ("must be true or false", None),
    "dict_type": ("must be a mapping", None),
    "list_type": ("must be a list", None),
    "model_type": ("must be a mapping", None),
    "missing": ("is required", None),
    "extra_forbidden": ("unknown field", None),
    "too_short": ("must not be empty", None),
}


def _pydantic_problems(err: ValidationError, data: dict) -> list[Problem]:
    out = []
    for e in err.errors(include_url=False):
        path = tuple(x for x in e["loc"] if x != "[key]")
        kind = e["type"]
        msg, hint = _TYPE_WORDS.get(kind, (e["msg"], None))
        if kind == "extra_forbidden":
            parent = _model_at(path[:-1])
            valid = ", ".join(parent.model_fields) if parent else ""
            hint = f"valid fields: {valid}" if valid else None
            msg = f"unknown field {path[-1]!r}"
        elif kind == "literal_error":
            msg = f"{e['input']!r} is not one of {e['ctx']['expected']}"
        elif kind == "value_error":
            msg = str(e["ctx"]["error"]) if "ctx" in e else e["msg"]
        elif kind == "string_type" and isinstance(e.get("input"), bool | float | int):
            # YAML turns no/yes/on/off into booleans and 1.30 into a float
            hint = f"YAML read {e['input']!r}; quote the value"
        out.append(Problem(path, msg, hint))
    return out


def _model_at(path: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Topology
    i = 0
    while model is not None and i < len(path):
        name = path[i]
        field = model.model_fields.get(name) if isinstance(name, str) else None
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", ())
        if name == "nodes" or name == "ssh" and model is Node:
            model = Node if name == "nodes" else Ssh
            i += 2 if name == "nodes" else 1
            continue
        if name in ("workloads", "impairments", "checks"):
            model = {"workloads": Workload, "impairments": Impairment, "checks": LabCheck}[name]
            i += 2
            continue
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        i += 1
    return model


# --- semantic checks ------------------------------------------------------------------------


def _label_problems(labels: dict[str, str], path: tuple) -> list[Problem]:
    out = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
            out.append(
                Problem(
                    path + (key,),
                    f"label key prefix {prefix!r} is not a DNS subdomain",
                    "lowercase letters, digits, '-' and '.'",
                )
            )
        elif not LABEL_NAME.fullmatch(name):
            out.append(
                Problem(
                    path + (key,),
                    f"label key {key!r} is not valid in Kubernetes",
                    "name part: 1-63 of [A-Za-z0-9-_.], alphanumeric at both ends",
                )
            )
        if value and not LABEL_NAME.fullmatch(value):
            out.append(
                Problem(
                    path + (key,),
                    f"label value {value!r} is not valid in Kubernetes",
                    "0-63 of [A-Za-z0-9-_.], alphanumeric at both ends",
                )
            )
    return out


def _version_problems(t: Topology) -> list[Problem]:
    out = []
    m = re.fullmatch(r"1\.([0-9]+)(?:\.([0-9]+))?", t.kubernetes.version)
    kminor = int(m.group(1)) if m else None
    if not m:
        out.append(
            Problem(
                ("kubernetes", "version"),
                f"{t.kubernetes.version!r} is not 1.MINOR or 1.MINOR.PATCH",
                'for example "1.34"',
            )
        )
    elif kminor not in SUPPORTED_K8S:
        out.append(
            Problem(
                ("kubernetes", "version"),
                f"Kubernetes {t.kubernetes.version} is not supported",
                f"supported: 1.{SUPPORTED_K8S.start}-1.{SUPPORTED_K8S.stop - 1}",
            )
        )
    c = re.fullmatch(r"v3\.([0-9]+)\.([0-9]+)", t.calico.version)
    if not c:
        out.append(
            Problem(
                ("calico", "version"), f"{t.calico.version!r} is not a Calico release vX.Y.Z", "for example v3.30.7"
            )
        )
    elif int(c.group(1)) not in CALICO_K8S:
        out.append(
            Problem(("calico", "version"), f"Calico {t.calico.version} is not supported", "supported: v3.29.x-v3.32.x")
        )
    elif kminor in SUPPORTED_K8S and kminor not in CALICO_K8S[int(c.group(1))]:
        k = CALICO_K8S[int(c.group(1))]
        out.append(
            Problem(
                ("calico", "version"),
                f"Calico {t.calico.version} is not tested with Kubernetes 1.{kminor}",
                f"it supports 1.{k.start}-1.{k.stop - 1}",
            )
        )
    return out


def _net_problems(t: Topology) -> list[Problem]:
    out = []
    nets = {("network", "lan"): t.network.lan} if t.network is not None else {}
    nets |= {("networks", name, "lan"): lan.lan for name, lan in t.lans.items()}
    nets |= {
        ("kubernetes", "pod_subnet"): t.kubernetes.pod_subnet,
        ("kubernetes", "service_subnet"): t.kubernetes.service_subnet,
    }
    for path, net in nets.items():
        if net.prefixlen < 8:
            out.append(Problem(path, f"{net} is too large", "use a /8 or smaller"))
        if net.overlaps(ipaddress.IPv4Network("127.0.0.0/8")) or net.overlaps(ipaddress.IPv4Network("169.254.0.0/16")):
            out.append(Problem(path, f"{net} overlaps loopback or link-local space", None))
    items = list(nets.items())
    for i, (pa, a) in enumerate(items):
        for pb, b in items[i + 1 :]:
            if a.overlaps(b):
                out.append(
                    Problem(pb, f"{b} overlaps {'.'.join(pa)} {a}", "the LAN, pods and services need disjoint CIDRs")
                )
    for path, lan, gw, given in _gateways(t):
        if given:
            if gw not in lan:
                out.append(Problem(path + ("gateway",), f"{gw} is not inside {'.'.join(path)}.lan {lan}", None))
            elif gw in (lan.network_address, lan.broadcast_address):
                out.append(Problem(path + ("gateway",), f"{gw} is the network or broadcast address of {lan}", None))
        if lan.prefixlen > 29:
            out.append(Problem(path + ("lan",), f"{lan} is too small", "use a /29 or larger"))
    pool = t.pool
    ppath = ("calico", "pool") if t.calico.pool else ("kubernetes", "pod_subnet")
    if t.calico.pool is not None and not pool.subnet_of(t.kubernetes.pod_subnet):
        out.append(
            Problem(
                ppath,
                f"{pool} is not inside kubernetes.pod_subnet {t.kubernetes.pod_subnet}",
                "Calico's operator rejects a pool outside the pod subnet",
            )
        )
    bs = t.calico.block_size
    if not 20 <= bs <= 32:
        out.append(Problem(("calico", "block_size"), f"{bs} is out of range", "20..32 (Calico's default is 26)"))
    elif bs < pool.prefixlen:
        out.append(
            Problem(
                ("calico", "block_size"),
                f"/{bs} blocks are larger than the pool {pool}",
                f"use a block_size of at least {pool.prefixlen}",
            )
        )
    elif 2 ** (bs - pool.prefixlen) < len(t.nodes):
        out.append(
            Problem(
                ppath,
                f"{pool} holds {2 ** (bs - pool.prefixlen)} /{bs} blocks, fewer than the {len(t.nodes)} nodes",
                "use a larger pool or a larger block_size",
            )
        )
    asn = t.calico.asn
    if not 1 <= asn <= 4294967294 or asn in (23456, 65535):
        out.append(
            Problem(
                ("calico", "asn"),
                f"{asn} is not a usable AS number",
                "1-4294967294, not 23456 or 65535; private: 64512-65534",
            )
        )
    return out


def _gateways(t: Topology) -> list[tuple]:
    """(path, lan, gateway, gateway written by the user) of the one network or of each of the networks."""
    if t.network is not None:
        return [(("network",), t.network.lan, t.gateway, t.network.gateway is not None)]
    return [
        (("networks", name), lan.lan, lan.gateway, t.networks[name].gateway is not None) for name, lan in t.lans.items()
    ]


NETWORK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,14}$")  # it names the router's interface in that network
# made by the kernel in every namespace: a router's interface cannot take that name
RESERVED_IFACES = ("lo", "tunl0", "gre0", "sit0", "ip6tnl0")


def _racks_problems(t: Topology) -> list[Problem]:
    """networks/routers/node network/calico.bgp: each node in its network, the networks joined by routers,
    the BGP design possible with what is declared."""
    out: list[Problem] = []
    design = t.calico.design
    if t.network is not None and t.networks is not None:
        return [Problem(("networks",), "network and networks are both set", "one LAN (network) or several (networks)")]
    if t.network is None and not t.networks:
        return [Problem(("network",), "is required", "or networks: several LANs joined by routers")]
    if t.calico.bgp == "reflectors" and not t.calico.route_reflectors:
        out.append(Problem(("calico", "bgp"), "reflectors needs calico.route_reflectors", "name the reflector nodes"))
    if t.calico.route_reflectors and design != "reflectors":
        out.append(
            Problem(("calico", "route_reflectors"), f"route reflectors with bgp: {design}", "set bgp: reflectors")
        )
    if design == "none" and not t.calico.encapsulation.startswith("VXLAN"):
        out.append(
            Problem(
                ("calico", "bgp"),
                f"bgp: none with encapsulation {t.calico.encapsulation}",
                "without BGP only Felix programs routes, and only for VXLAN: use VXLAN or VXLANCrossSubnet",
            )
        )
    if t.network is not None:
        if t.routers:
            out.append(Problem(("routers",), "routers need networks", "declare networks: with a LAN each"))
        if design == "tor":
            out.append(Problem(("calico", "bgp"), "tor needs networks and routers", "declare networks: and routers:"))
        for name, node in t.nodes.items():
            if node.network is not None:
                out.append(Problem(("nodes", name, "network"), "a node network needs networks:", "remove it"))
        return out
    kind = providers.traits(t.provider)
    if not (kind.builds_routers or kind.routers_exist):
        out.append(
            Problem(
                ("networks",),
                f"the {t.provider} provider does not build networks and routers yet",
                "use netns, or vm with machines already in those networks",
            )
        )
    lans = t.lans
    for name in lans:
        if not NETWORK_NAME.fullmatch(name):
            out.append(Problem(("networks", name), f"network name {name!r} is not usable", "^[a-z][a-z0-9-]{0,14}$"))
        elif name in RESERVED_IFACES:
            out.append(Problem(("networks", name), f"network name {name!r} names a kernel device", "pick another"))
    routers = t.routers or {}
    used: dict[IPv4Address, str] = {}
    gateways: dict[str, str] = {}  # network -> router holding its gateway
    for r, router in routers.items():
        path = ("routers", r)
        if not DNS_LABEL.fullmatch(r) or r in t.nodes:
            out.append(Problem(path, f"router name {r!r} is not a DNS-1123 label or is a node's", "pick another"))
        for net, addr in router.interfaces.items():
            ipath = path + ("interfaces", net)
            if net not in lans:
                out.append(Problem(ipath, f"{net!r} is not one of the networks", f"networks: {', '.join(lans)}"))
                continue
            lan = lans[net]
            if addr not in lan.lan or addr in (lan.lan.network_address, lan.lan.broadcast_address):
                out.append(Problem(ipath, f"{addr} is not a host address of {net} {lan.lan}", None))
            elif addr == lan.host:
                out.append(Problem(ipath, f"{addr} is the host's address on {net}", "the last host before the gateway"))
            if addr in used:
                out.append(Problem(ipath, f"{addr} is already used by {used[addr]}", None))
            used.setdefault(addr, f"router {r}")
            if addr == lan.gateway:
                gateways[net] = r
        if router.asn is not None:
            out += _asn_problems(router.asn, path + ("asn",))
            for net in router.interfaces:
                if design == "tor" and net in lans and t.networks[net].asn == router.asn:
                    out.append(
                        Problem(
                            path + ("asn",),
                            f"{router.asn} is also network {net}'s asn: its ToR sessions would be iBGP, not eBGP",
                            "give the router an AS of its own",
                        )
                    )
        elif design == "tor":
            out.append(Problem(path + ("asn",), "bgp: tor needs an asn on every router", "e.g. asn: 65000"))
    with_nodes = {node.network for node in t.nodes.values()}
    for name, lan in lans.items():
        if t.networks[name].asn is not None:
            out += _asn_problems(t.networks[name].asn, ("networks", name, "asn"))
        elif design == "tor" and name in with_nodes:
            out.append(
                Problem(("networks", name, "asn"), "bgp: tor needs the AS of the nodes in each network", "e.g. 65001")
            )
        if name not in gateways and len(lans) > 1:
            out.append(
                Problem(("networks", name, "gateway"), f"{lan.gateway} is no router's interface", "add it to a router")
            )
    # every network reaches every other through routers (a router joins the networks it has interfaces in)
    if lans:
        seen, todo = set(), [next(iter(lans))]
        while todo:
            net = todo.pop()
            if net in seen:
                continue
            seen.add(net)
            todo += [n for r in routers.values() if net in r.interfaces for n in r.interfaces if n in lans]
        for name in lans:
            if name not in seen:
                out.append(
                    Problem(("networks", name), f"no router joins {name} to {next(iter(lans))}", "add an interface")
                )
    for name, node in t.nodes.items():
        path = ("nodes", name)
        if node.network is None:
            out.append(Problem(path + ("network",), "is required with networks", f"one of: {', '.join(lans)}"))
        elif node.network not in lans:
            out.append(Problem(path + ("network",), f"{node.network!r} is not one of the networks", ", ".join(lans)))
        elif node.address in used:
            out.append(Problem(path + ("address",), f"{node.address} is already used by {used[node.address]}", None))
    return out


def _asn_problems(asn: int, path: tuple) -> list[Problem]:
    if not 1 <= asn <= 4294967294 or asn in (23456, 65535):
        return [Problem(path, f"{asn} is not a usable AS number", "1-4294967294, not 23456 or 65535")]
    return []


def _host_bits(src: yamlsrc.Source) -> list[Problem]:
    out = []
    data = src.data if isinstance(src.data, dict) else {}
    nets = data.get("networks") if isinstance(data.get("networks"), dict) else {}
    for path in (
        ("network", "lan"),
        *(("networks", name, "lan") for name in nets),
        ("kubernetes", "pod_subnet"),
        ("kubernetes", "service_subnet"),
        ("calico", "pool"),
    ):
        v: Any = data
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, str):
            try:
                ipaddress.IPv4Network(v)
            except ValueError:
                try:
                    n = ipaddress.IPv4Network(v, strict=False)
                    out.append(Problem(path, f"{v} has host bits set", f"did you mean {n}?"))
                except ValueError:
                    pass
    return out


def _node_problems(t: Topology) -> list[Problem]:
    out = []
    cps = [n for n, node in t.nodes.items() if node.role == "control-plane"]
    if len(cps) != 1:
        out.append(
            Problem(
                ("nodes",),
                f"need exactly one control-plane node, found {len(cps)}" + (f" ({', '.join(cps)})" if cps else ""),
                "set role: control-plane on one node",
            )
        )
    seen: dict[IPv4Address, str] = {}
    lans = t.lans
    for name, node in t.nodes.items():
        path = ("nodes", name)
        if t.network is not None:
            lan, gateway, where = t.network.lan, t.gateway, "network.lan"
        elif node.network in lans:
            lan, gateway, where = lans[node.network].lan, lans[node.network].gateway, f"network {node.network}"
        else:
            lan = None  # reported by _racks_problems
        if not DNS_LABEL.fullmatch(name):
            out.append(
                Problem(
                    path,
                    f"node name {name!r} is not a DNS-1123 label",
                    "lowercase letters, digits and '-', 1-63 chars, alphanumeric at both ends",
                )
            )
        a = node.address
        if lan is None:
            pass
        elif a not in lan:
            hint = providers.traits(t.provider).lan_hint
            out.append(Problem(path + ("address",), f"{a} is not inside {where} {lan}", hint))
        elif a in (lan.network_address, lan.broadcast_address):
            out.append(Problem(path + ("address",), f"{a} is the network or broadcast address of {lan}", None))
        elif a == gateway:
            out.append(Problem(path + ("address",), f"{a} is the LAN gateway", "pick another address"))
        elif t.network is None and a == lans[node.network].host:
            out.append(Problem(path + ("address",), f"{a} is the host's address on {node.network}", "pick another"))
        if a in seen:
            out.append(Problem(path + ("address",), f"{a} is already used by node {seen[a]}", None))
        seen.setdefault(a, name)
        ifname = t.defaults.interface if node.interface is None else node.interface
        ipath = path + ("interface",) if node.interface is not None else ("defaults", "interface")
        if not IFNAME.fullmatch(ifname) or ifname in ("lo", "tunl0", "vxlan.calico", "all", "default"):
            out.append(
                Problem(
                    ipath,
                    f"{ifname!r} is not a usable interface name",
                    "1-15 of [A-Za-z0-9_.-], not lo/tunl0/vxlan.calico",
                )
            )
        out += _label_problems(node.labels, path + ("labels",))
        if node.ssh is not None:
            out += _ssh_problems(node.ssh, path + ("ssh",))
    return out + _ssh_problems(t.defaults.ssh, ("defaults", "ssh"))


def _ssh_problems(ssh: Ssh, path: tuple) -> list[Problem]:
    out = []
    if not USERNAME.fullmatch(ssh.user):
        out.append(Problem(path + ("user",), f"{ssh.user!r} is not a valid user name", None))
    if ssh.jump is not None:
        m = re.fullmatch(r"(?:([a-z_][a-z0-9_.-]*)@)?([^@:\s]+)(?::([0-9]+))?", ssh.jump)
        if not m or not HOSTNAME.fullmatch(m.group(2)) or (m.group(3) and not 0 < int(m.group(3)) < 65536):
            out.append(Problem(path + ("jump",), f"{ssh.jump!r} is not [user@]host[:port]", None))
    if not ssh.key or "\n" in ssh.key or "\0" in ssh.key:
        out.append(Problem(path + ("key",), "not a usable file path", None))
    return out


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        k = (p.path, p.message)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


def _rr_problems(t: Topology) -> list[Problem]:
    out = []
    rrs = t.calico.route_reflectors
    for i, name in enumerate(rrs):
        if name not in t.nodes:
            out.append(
                Problem(
                    ("calico", "route_reflectors", i),
                    f"{name!r} is not a node of this lab",
                    f"nodes: {', '.join(list(t.nodes)[:8])}{', ...' if len(t.nodes) > 8 else ''}",
                )
            )
        elif rrs.index(name) != i:
            out.append(Problem(("calico", "route_reflectors", i), f"{name!r} is listed twice", None))
    try:
        IPv4Address(t.calico.rr_cluster_id)
    except ValueError:
        out.append(
            Problem(("calico", "rr_cluster_id"), f"{t.calico.rr_cluster_id!r} is not IPv4-formatted", "e.g. 244.0.0.1")
        )
    return out


def _workload_problems(t: Topology) -> list[Problem]:
    out = []
    index = _LabelIndex(t)
    names: set[str] = set()
    for i, w in enumerate(t.workloads or []):
        path = ("workloads", i)
        if not DNS_LABEL.fullmatch(w.name) or len(w.name) > 40:
            out.append(
                Problem(
                    path + ("name",), f"{w.name!r} is not a valid workload name", "a DNS-1123 label of at most 40 chars"
                )
            )
        if w.name in names:
            out.append(Problem(path + ("name",), f"workload {w.name!r} is declared twice", None))
        names.add(w.name)
        out += _label_problems(w.node_selector, path + ("node_selector",))
        if not index.matching(w.node_selector):
            out.append(
                Problem(path + ("node_selector",), f"{w.node_selector} matches no node", "check the nodes' labels")
            )
    return out


PROXY_URL = re.compile(r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:@\[\]-]+(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$")
NO_PROXY = re.compile(r"^[A-Za-z0-9._:/*-]+$")


def _proxy_problems(t: Topology) -> list[Problem]:
    out = []
    if t.proxy is None:
        return out
    for key in ("http", "https"):
        url = getattr(t.proxy, key)
        if url is not None and not PROXY_URL.match(url):
            out.append(Problem(("proxy", key), f"{url!r} is not an http(s):// URL", "e.g. http://proxy.example:3128"))
    for i, entry in enumerate(t.proxy.no_proxy):
        if not NO_PROXY.match(entry):
            out.append(Problem(("proxy", "no_proxy", i), f"{entry!r} is not a host, domain or CIDR", None))
    return out


def check(t: Topology) -> list[Problem]:
    name = (
        []
        if LAB_NAME.fullmatch(t.name)
        else [
            Problem(
                ("name",),
                f"{t.name!r} does not match the pattern ^[a-z][a-z0-9-]{{0,19}}$",
                "lowercase letter first, then up to 19 of [a-z0-9-]",
            )
        ]
    )
    racks = _racks_problems(t)
    if t.network is None and not t.networks:
        return name + racks
    return (
        name
        + racks
        + _proxy_problems(t)
        + _rr_problems(t)
        + _version_problems(t)
        + _net_problems(t)
        + _node_problems(t)
        + _workload_problems(t)
        + _qemu_problems(t)
        + _impairment_problems(t)
        + _lab_check_problems(t)
    )


def impairment_targets(t: Topology) -> list[tuple[str, str]]:
    """(node, interface) of each impairment, the interface defaulting to the node's LAN NIC."""
    out = []
    for imp in t.impairments or []:
        node, _, iface = imp.node.partition(":")
        n = t.nodes.get(node)
        out.append((node, iface or (n.interface or t.defaults.interface if n else "")))
    return out


def _impairment_problems(t: Topology) -> list[Problem]:
    from labctl.errors import UsageError
    from labctl.live import impair

    out, seen = [], set()
    for i, (imp, (node, iface)) in enumerate(zip(t.impairments or [], impairment_targets(t), strict=True)):
        path = ("impairments", i)
        n = t.nodes.get(node)
        if n is None:
            out.append(Problem(path + ("node",), f"{node!r} is not a node of this lab", f"nodes: {_some(t.nodes)}"))
            continue
        # what exists on every node: its LAN NIC and the tunnel device (labctl picks one per kernel)
        known = [n.interface or t.defaults.interface, "vxlan.calico", "tunl0"]
        if iface not in known:
            out.append(
                Problem(path + ("node",), f"no interface {iface!r} on {node}", f"interfaces: {', '.join(known)}")
            )
        if (node, iface) in seen:
            out.append(Problem(path + ("node",), f"{node}:{iface} is impaired twice", "one entry per interface"))
        seen.add((node, iface))
        try:
            impair.spec(imp.delay, imp.jitter, imp.loss, imp.rate)
        except UsageError as e:
            # the CLI's words, without its option dashes, at the field they name
            msg = e.message.replace("--", "")
            field = msg.split(" ")[0]
            out.append(Problem(path + ((field,) if field in Impairment.model_fields else ()), msg, e.hint))
    return out


def _some(names) -> str:
    names = list(names)
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def _lab_check_problems(t: Topology) -> list[Problem]:
    out, names = [], set()
    pods = {w.name for w in _workloads(t)}
    for i, c in enumerate(t.checks or []):
        path = ("checks", i)
        if not c.name.strip():
            out.append(Problem(path + ("name",), "must not be empty", None))
        elif any(not ch.isprintable() for ch in c.name):
            out.append(Problem(path + ("name",), f"{c.name!r} has a tab, newline or control character", "one line"))
        if c.name in names:
            out.append(Problem(path + ("name",), f"check {c.name!r} is declared twice", None))
        names.add(c.name)
        kinds = [k for k in ("exec", "reach", "route", "bgp") if getattr(c, k) is not None]
        if len(kinds) != 1:
            out.append(Problem(path, f"a check needs exactly one of exec, reach, route, bgp (has {len(kinds)})", None))
        for k in ("exec", "route", "bgp"):
            sub = getattr(c, k)
            if sub is not None and sub.node not in t.nodes:
                out.append(
                    Problem(path + (k, "node"), f"{sub.node!r} is not a node of this lab", f"nodes: {_some(t.nodes)}")
                )
        if c.reach is not None:
            ends = [x.strip() for x in c.reach.split("->")]
            if len(ends) != 2 or not all(ends):
                out.append(Problem(path + ("reach",), f"{c.reach!r} is not 'A -> B'", "e.g. pod-a -> pod-b"))
            else:
                for end in ends:
                    if end not in pods and end not in t.nodes:
                        out.append(
                            Problem(
                                path + ("reach",),
                                f"{end!r} is neither a workload nor a node of this lab",
                                f"workloads: {_some(sorted(pods))}",
                            )
                        )
        if c.route is not None and c.route.via is not None and c.route.via not in t.nodes:
            try:
                IPv4Address(c.route.via)
            except ValueError:
                out.append(Problem(path + ("route", "via"), f"{c.route.via!r} is neither a node nor an IPv4", None))
        if (c.expect is not None or c.expect_regex is not None) and c.exec is None:
            out.append(Problem(path, "expect/expect_regex apply to exec checks only", None))
        if c.expect is not None and c.expect_regex is not None:
            out.append(Problem(path, "expect and expect_regex are both set", "one of them"))
        if not 1 <= c.timeout <= 600:
            out.append(Problem(path + ("timeout",), f"{c.timeout} is out of range", "1..600 seconds"))
        if c.expect_regex is not None:
            try:
                re.compile(c.expect_regex)
            except re.error as e:
                out.append(Problem(path + ("expect_regex",), f"not a regular expression: {e}", None))
        if not 0 <= c.wait <= 600:
            out.append(Problem(path + ("wait",), f"{c.wait} is out of range", "0..600 seconds"))
        if not 0 <= c.retries <= 100:
            out.append(Problem(path + ("retries",), f"{c.retries} is out of range", "0..100"))
        if c.bgp is not None and c.bgp.established < 0:
            out.append(Problem(path + ("bgp", "established"), "must not be negative", None))
    return out


MAX_VM_MIB = 65536


def _qemu_problems(t: Topology) -> list[Problem]:
    if t.qemu is None:
        return []
    if not providers.traits(t.provider).takes_qemu_block:
        return [Problem(("qemu",), f"a qemu block in a {t.provider} lab", "set provider: qemu, or remove it")]
    from labctl.providers.qemu import image

    q, out = t.qemu, []
    for role in ("control_plane", "worker"):
        m = getattr(q, role)
        if m.memory < 1024:
            out.append(Problem(("qemu", role, "memory"), f"{m.memory} MiB is too little for a node", "at least 1024"))
        elif m.memory > MAX_VM_MIB:  # the host's memory is checked too, where the lab is built (provider checks)
            out.append(Problem(("qemu", role, "memory"), f"{m.memory} MiB is more than a lab VM needs", "<= 65536"))
        if not 1 <= m.cpus <= 64:
            out.append(Problem(("qemu", role, "cpus"), f"{m.cpus} vCPUs is not in 1..64", None))
    if q.image not in image.RECIPES:
        out += [Problem(("qemu", *path), msg, hint) for path, msg, hint in image.check_path(q.image, q.sha256)]
    return out


def load(path: Path) -> Topology:
    src = yamlsrc.load_file(path)
    return from_source(src)


def loads(text: str, name: str = "<topology>") -> Topology:
    return from_source(yamlsrc.load(text, name))


def from_source(src: yamlsrc.Source) -> Topology:
    if src.problems and src.data is None:
        raise TopologyError([src.format(p) for p in src.problems])
    problems = list(src.problems) + _host_bits(src)
    try:
        topo = Topology.model_validate(src.data)
    except ValidationError as e:
        raise TopologyError([src.format(p) for p in problems + _pydantic_problems(e, src.data)]) from None
    problems += check(topo)
    if not problems:
        problems += plan_problems(topo)
    if problems:
        raise TopologyError([src.format(p) for p in _dedupe(problems)])
    return topo


# --- what follows from a topology -----------------------------------------------------------


def base_labels(name: str, role: str) -> dict[str, str]:
    """Labels Kubernetes itself puts on a node."""
    base = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if role == "control-plane":
        base["node-role.kubernetes.io/control-plane"] = ""
    return base


def implicit_labels(name: str, node: Node) -> dict[str, str]:
    return base_labels(name, node.role) | dict(node.labels)


@dataclass(frozen=True)
class PodPlan:
    name: str
    node: str
    ip: IPv4Address
    veth: str  # node side, Calico style: cali + 11 hex chars
    node_selector: dict


@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int
    role: str
    address: IPv4Address
    interface: str
    block: IPv4Network
    tunnel_ip: IPv4Address | None
    vtep_mac: str
    labels: dict  # the user's labels (applied last)
    ssh: Ssh
    network: str | None = None  # with networks: the node's network


@dataclass(frozen=True)
class Plan:
    topology: Topology
    nodes: list[NodePlan]
    pods: list[PodPlan]


def _workloads(t: Topology) -> list[Workload]:
    if t.workloads is not None:
        return list(t.workloads)
    return [Workload(name=f"pod-{n}"[:40].rstrip("-"), node_selector={"kubernetes.io/hostname": n}) for n in t.nodes]


class _LabelIndex:
    """(key, value) -> nodes carrying it, so matching a selector costs its size, not the lab's."""

    def __init__(self, t: Topology):
        self.order = list(t.nodes)
        self.position = {name: i for i, name in enumerate(self.order)}
        self.by_label: dict[tuple[str, str], set[str]] = {}
        for name, node in t.nodes.items():
            for kv in implicit_labels(name, node).items():
                self.by_label.setdefault(kv, set()).add(name)

    def matching(self, selector: dict[str, str]) -> list[str]:
        if not selector:
            return self.order
        sets = [self.by_label.get(kv, set()) for kv in selector.items()]
        hit = set.intersection(*sets)
        return sorted(hit, key=self.position.__getitem__)


def _schedule(t: Topology, wl: list[Workload]) -> list[tuple[Workload, str]]:
    """Like kube-scheduler's spreading, simply: each workload goes to the matching node with the
    fewest workloads so far, ties broken by node order."""
    load = {n: 0 for n in t.nodes}
    index = _LabelIndex(t)
    out = []
    for w in wl:
        candidates = index.matching(w.node_selector)
        if not candidates:
            continue
        best = min(candidates, key=lambda n: load[n])
        load[best] += 1
        out.append((w, best))
    return out


def _plan(t: Topology) -> tuple[Plan | None, list[Problem]]:
    problems = []
    blocks = t.pool.subnets(new_prefix=t.calico.block_size)
    nodes = []
    for i, (name, node) in enumerate(t.nodes.items()):
        block = next(blocks)
        tunnel = None
        if t.calico.encapsulation != "None":
            tunnel = block.network_address + (1 if block.num_addresses > 1 else 0)
        mac = "66:" + ":".join(f"{b:02x}" for b in hashlib.sha1(f"{t.name}/{name}".encode()).digest()[:5])
        nodes.append(
            NodePlan(
                name,
                i,
                node.role,
                node.address,
                t.defaults.interface if node.interface is None else node.interface,
                block,
                tunnel,
                mac,
                dict(node.labels),
                merge_ssh(t.defaults.ssh, node.ssh),
                node.network,
            )
        )
    pods = []
    by_node = {n.name: n for n in nodes}
    used: dict[str, int] = {}
    wl = _workloads(t)
    for w, node_name in _schedule(t, wl):
        n = by_node[node_name]
        k = used.get(node_name, 0)
        used[node_name] = k + 1
        first = 2 if n.tunnel_ip is not None else 1
        if first + k >= n.block.num_addresses - 1:
            idx = wl.index(w)
            path = ("workloads", idx) if t.workloads is not None else ("calico", "block_size")
            problems.append(
                Problem(
                    path,
                    f"block {n.block} of node {node_name} has no address left for {w.name}",
                    "use a smaller calico.block_size",
                )
            )
            continue
        ip = n.block.network_address + first + k
        veth = "cali" + hashlib.sha1(f"{t.name}.{w.name}".encode()).hexdigest()[:11]
        pods.append(PodPlan(w.name, node_name, ip, veth, dict(w.node_selector)))
    return Plan(t, nodes, pods), problems


def _planned(t: Topology) -> tuple[Plan | None, list[Problem]]:
    # a topology is frozen, so its plan is computed once and kept on it: load checks the plan's
    # problems, and `up`/render take the same plan without planning again
    if t._plan is None:
        t._plan = _plan(t)
    return t._plan


def plan_problems(t: Topology) -> list[Problem]:
    return _planned(t)[1]


def plan(t: Topology) -> Plan:
    return _planned(t)[0]
