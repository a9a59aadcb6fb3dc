"""The lab model: the one schema of topology-data.json.

`up` (and `render`) build it once from the topology, its plan and the host's facts (the tunnel
device), write it with `dump_json`, and every reader loads it back with `LabModel.load` and reads
attributes. Keys that only some labs have (a node's `network`, `gateway`, `kernel`...; the lab's
`networks`, `routers`, `impairments`, `checks`) are absent from the file when unset: the model is
dumped with exclude_unset, so a lab's file keeps exactly the shape the templates and the roles know
(`is defined` in Jinja, `default(...)` filters). Addresses stay strings, as in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labctl.errors import LabctlError
from labctl.spec.schema import LabCheck, Qemu


class _M(BaseModel):
    # forbid: a key the builder or a reader misspells is an error, not a silent new field
    model_config = ConfigDict(extra="forbid")

    def to_data(self) -> dict:
        """The JSON form (what the file holds, what templates and providers take as a dict)."""
        return self.model_dump(mode="json", exclude_unset=True)


class Network(_M):
    lan: str  # one LAN, or with networks the LANs comma-separated
    gateway: str


class Kubernetes(_M):
    version: str
    pod_subnet: str
    service_subnet: str


class Calico(_M):
    version: str
    encapsulation: str
    pool: str
    block_size: int
    asn: int
    nat_outgoing: bool
    route_reflectors: list[str] = Field(default_factory=list)
    rr_cluster_id: str = "244.0.0.1"
    tunnel_device: str | None = None  # decided by the host at up (IPIP falls back to vxlan.calico)
    bgp: str | None = None  # the BGP design, only when the topology has networks or calico.bgp
    felix: bool | None = None  # Felix programs the routes: every VXLAN lab (set with bgp)


class Jump(_M):
    user: str
    host: str
    port: int
    key: str


class Ssh(_M):
    """How the node is reached (labctl.live.access.Access in data form)."""

    user: str = "root"
    port: int = 22
    key: str = "~/.ssh/id_ed25519"
    jump: Jump | str | None = None  # an older lab wrote the jump as [user@]host[:port]
    become: bool | None = None
    bridge: str | None = None


class Pod(_M):
    name: str
    ip: str
    veth: str
    netns: str


class Peer(_M):
    """A BGP session, named as calico-node names it (Mesh_<ip>, Node_<ip>, Router_<ip>)."""

    name: str
    address: str
    protocol: str
    type: str  # mesh | rr | rr-client | tor | tor-client | router
    asn: int | None = None  # eBGP: the peer's AS
    local: str | None = None  # routers: the local address towards the peer


class OtherLan(_M):
    lan: str
    via: str


class KernelRoute(_M):
    block: str
    action: str


class Node(_M):
    name: str
    role: str
    address: str
    interface: str
    block: str
    tunnel_ip: str | None = None
    vtep_mac: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    base_labels: dict[str, str] = Field(default_factory=dict)
    ssh: Ssh = Field(default_factory=Ssh)
    network: str | None = None
    dir: str = ""
    bird_socket: str = ""
    pods: list[Pod] = Field(default_factory=list)
    route_reflector: bool = False
    peers: list[Peer] = Field(default_factory=list)
    # with networks or a chosen calico.bgp
    gateway: str | None = None
    lans: list[OtherLan] | None = None
    asn: int | None = None
    kernel: Literal["felix"] | list[KernelRoute] | None = None
    felix_routes: list[str] | None = None
    apply_labels: dict[str, str] = Field(default_factory=dict)


class RouterInterface(_M):
    network: str
    ifname: str
    address: str
    prefixlen: int
    bridge: str
    host: str


class RouterRoute(_M):
    """A static route of a router to a network it does not join, via a neighbour router."""

    lan: str
    via: str
    dev: str


class Router(_M):
    name: str
    role: Literal["router"] = "router"
    address: str
    interface: str
    asn: int | None = None
    interfaces: list[RouterInterface]
    ssh: Ssh = Field(default_factory=Ssh)
    dir: str = ""
    bird_socket: str = ""
    pods: list[Pod] = Field(default_factory=list)
    peers: list[Peer] = Field(default_factory=list)
    routes: list[RouterRoute] = Field(default_factory=list)


class NetworkInfo(_M):
    lan: str
    gateway: str
    asn: int | None = None
    host: str
    bridge: str | None  # None: the provider makes no bridges (vm: the user's networks)


class Workload(_M):
    name: str
    node: str
    ip: str
    veth: str
    node_selector: dict[str, str] = Field(default_factory=dict)


class Impairment(_M):
    node: str
    interface: str
    spec: dict[str, float | int]


class LabModel(_M):
    name: str
    provider: str
    network: Network
    kubernetes: Kubernetes
    calico: Calico
    nodes: list[Node]
    workloads: list[Workload] = Field(default_factory=list)
    qemu: Qemu | None = None
    networks: dict[str, NetworkInfo] | None = None
    routers: list[Router] | None = None
    impairments: list[Impairment] | None = None
    checks: list[LabCheck] | None = None

    # -- the file ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> LabModel:
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as e:
            where = ", ".join(".".join(map(str, x["loc"])) + ": " + x["msg"] for x in e.errors()[:3])
            raise LabctlError(
                f"{path} is not a lab model this labctl reads ({where})",
                "`labctl down` the lab with the labctl that made it, or `labctl up` it again",
            ) from None

    def dump_json(self) -> str:
        # json.dumps, not model_dump_json: the file's text (ASCII escapes, spacing) stays as it was
        return json.dumps(self.to_data(), indent=2) + "\n"

    # -- what readers ask of it --------------------------------------------------------------

    @property
    def speakers(self) -> list[Node | Router]:
        """Everything that runs BGP or forwards: the nodes, then the routers."""
        return [*self.nodes, *(self.routers or [])]

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def control_plane(self) -> Node:
        return next(n for n in self.nodes if n.role == "control-plane")

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "worker"]


def as_node(x: Node | Router | dict) -> Node | Router:
    """A node (or router) of the model. Code that still holds topology-data.json as a dict (the
    providers' bootstrap and faults) passes its dict form, validated here, so everything below
    this boundary (NodeShell, probes, birdc) reads attributes."""
    if isinstance(x, Node | Router):
        return x
    return (Router if x.get("role") == "router" else Node).model_validate(x)
