"""The providers a topology may name, and what each decides for the rest of labctl (its traits).

A provider is a class under labctl/providers/ plus one line in REGISTRY: where its class is (imported
only by labctl.providers.get, the layers above; nothing below imports a provider) and its Traits, which
every layer reads by the lab's provider name (`traits(model.provider)`), never by comparing the name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from labctl.errors import UsageError


@dataclass(frozen=True)
class Traits:
    lab_key: bool = False  # labctl makes the lab's SSH key and the nodes trust only it (user lab_user, port 22)
    lab_user: str = "root"  # the login on nodes with the lab key (non-root: sudo)
    takes_qemu_block: bool = False  # the topology's `qemu:` block configures this provider's machines
    # labctl emulates the dataplane: BIRD configs, node dirs and pod namespaces per node. False: real
    # Calico in a real cluster, whose pods labctl.observe.pods reads live (IPAM addresses, runtime sandboxes)
    emulated: bool = False
    labels_in_kubernetes: bool = False  # node labels live in the Kubernetes API (else in the lab state and node dir)
    route_reflector_label: bool = False  # reflectors carry `route-reflector=true` (Calico's BGPPeer selects them)
    builds_routers: bool = False  # `networks:` and `routers:` (several LANs) are built by this provider
    # the networks and routers already exist (vm: the user's racks); labctl only renders Calico's side of them
    routers_exist: bool = False
    lan_hint: str | None = None  # the hint when a node's address lies outside network.lan
    ssh_timeout: int = 10  # ansible's connection timeout (s)
    # each node is a namespace on this host: what a lab whose data file is damaged left is found there
    nodes_on_host: bool = False
    # the prefix of the host links (bridges, veths/taps) the provider makes, named by labctl.plan.names;
    # None: it makes none (the vm provider's networks are the user's)
    links: str | None = None
    default_proxy: str | None = None  # the package proxy a lab gets when its topology names none


@dataclass(frozen=True)
class Entry:
    impl: str  # "module:Class"
    traits: Traits


_VM = Traits(
    labels_in_kubernetes=True,
    route_reflector_label=True,
    routers_exist=True,  # the VMs' racks and routers are the user's; `routers:` says how they peer
    lan_hint="network.lan must be the subnet the VMs share",
)

REGISTRY: dict[str, Entry] = {
    "netns": Entry(
        "labctl.providers.netns.provider:NetnsProvider",
        Traits(lab_key=True, emulated=True, builds_routers=True, nodes_on_host=True, links="lc"),
    ),
    "vm": Entry("labctl.providers.vm:VmProvider", _VM),
    # the vm stack on machines labctl boots: routers are namespaces of this host joined to the VMs'
    # bridges; under TCG a loaded host's VMs take more than 10 s to answer sudo (docs/vm-speed.md); the
    # proxy is the lab's apt-cacher-ng by name (each VM's /etc/hosts maps it to the host on its LAN)
    "qemu": Entry(
        "labctl.providers.qemu.provider:QemuProvider",
        dataclasses.replace(
            _VM,
            lab_key=True,
            lab_user="labctl",
            takes_qemu_block=True,
            builds_routers=True,
            ssh_timeout=30,
            links="lq",
            default_proxy="http://labctl-proxy:3143",
        ),
    ),
}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def entry(name: str) -> Entry:
    if name not in REGISTRY:
        raise UsageError(f"unknown provider {name!r}", f"valid providers: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def traits(name: str) -> Traits:
    """What the provider of this name decides for the rest of labctl."""
    return entry(name).traits
