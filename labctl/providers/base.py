"""The provider boundary: what differs between the ways a lab's nodes exist, as hooks and flags.

Everything outside labctl/providers/ asks the lab's provider (providers.get / providers.kind), never
its name. Adding a provider is a module here plus one line in labctl.spec.providers.REGISTRY
(tests/test_toy_provider.py shows one). Every hook takes the typed lab model (LabModel, Node, Router);
teardown also takes Remains, what a lab whose data file is gone or unreadable left.

Decision: one class hierarchy, not two axes. "How a node exists" (a namespace, a local VM, an
existing machine) and "what runs on it" (labctl's emulated Calico dataplane, or kubeadm + Calico)
are split only where it pays: today there are two dataplanes and each comes with one way of making
nodes, except the qemu provider, which runs exactly the vm stack on machines it creates. So qemu is a
subclass of VmProvider that overrides the machine lifecycle hooks (preflight, bootstrap, teardown,
remove_nodes, bridge) and inherits the rest (playbooks, labels in Kubernetes, birdc in calico-node).
A second axis (a separate "dataplane" object) would be worth it once two ways of making nodes share
the emulated dataplane too."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from labctl.errors import UsageError
from labctl.host import sh
from labctl.plan import names
from labctl.plan.layout import LabDir
from labctl.plan.model import LabModel, Node, Router
from labctl.spec.providers import traits


@dataclass(frozen=True)
class LeftPod:
    netns: str


@dataclass(frozen=True)
class LeftNode:
    name: str
    pods: list[LeftPod] = field(default_factory=list)


@dataclass(frozen=True)
class Remains:
    """What a lab whose topology-data.json is gone or unreadable left, as its state, its node dirs and
    the host show it: what teardown takes instead of the LabModel. Read like one (name, provider,
    nodes[].name, nodes[].pods[].netns, routers), so teardown code serves both."""

    name: str
    provider: str
    nodes: list[LeftNode] = field(default_factory=list)
    routers: None = None

    def to_data(self) -> dict:
        return {
            "name": self.name,
            "provider": self.provider,
            "nodes": [{"name": n.name, "pods": [{"netns": p.netns} for p in n.pods]} for n in self.nodes],
        }


class Provider:
    name: str = ""
    up_playbook: str = ""
    down_playbook: str | None = None  # None: teardown alone undoes the lab

    accept_new_host_keys = False  # set by Lab.up from --accept-new-host-keys

    def __init__(self, lab=None):
        self.lab = lab
        self.dir = lab.dir if lab is not None else None
        # what the rest of labctl reads of this provider (the registry line's Traits)
        self.traits = traits(self.name)

    # -- machine lifecycle (what a subclass like qemu overrides) ----------------------------

    def preflight(self, model: LabModel) -> list[str]:
        """Raise if this host cannot run the lab; return warnings."""
        return self.checks(model)

    def checks(self, model: LabModel) -> list[str]:
        """What the lab itself allows, needing no root and changing nothing (`validate`, `up --dry-run`
        and preflight refuse alike); returns warnings."""
        return []

    def ipip_supported(self) -> bool:
        return True

    def netem_supported(self) -> bool | None:
        """Whether the nodes' kernel has tc netem (delay/jitter/loss); None: not known before the
        nodes are reached (then `labctl impair`/`up` find out on the node and say so)."""
        return None

    def host_shell(self, node: Node | Router):
        """A shell on the node that does not go through the node's own link (nsshell.NsShell), for
        what must work while that link is impaired; None: the node is reached over SSH only."""
        return None

    def bootstrap(self, model: LabModel, progress) -> dict:
        """Make the nodes exist and answer SSH; returns pids per node worth recording."""
        return {}

    def check_host_keys(self, model: LabModel, progress) -> None:
        return None

    def teardown(self, lab: LabModel | Remains, progress) -> None:
        """Remove whatever of the lab exists (lab: its model, or what is left of it: Remains)."""
        return None

    def remove_nodes(self, model: LabModel, names: list[str], progress) -> None:
        """Take these nodes out of the running lab; `model` is the lab before the change."""
        raise UsageError(
            f"removing nodes ({', '.join(names)}) from a {self.name} lab is not supported yet",
            "run `labctl down` and `labctl up` with the new topology",
        )

    # -- what a lab left on this host (asked of providers whose traits say nodes_on_host) ----------

    @classmethod
    def left_on_host(cls, lab_dir: LabDir) -> Remains | None:
        """What a lab of this lab dir's name left on this host while the dir is gone or unreadable."""
        return None

    @classmethod
    def orphans(cls) -> list[str]:
        """Labs of this labctl home that left something on the host but have no directory."""
        return []

    @classmethod
    def other_home(cls, lab_dir: LabDir) -> str | None:
        """The lab dir of another labctl home whose lab of this name runs on this host, if any."""
        return None

    @classmethod
    def running_from(cls, lab_dir: LabDir) -> list[int]:
        """The processes of this host that run from the lab dir's node dirs (a lab that is up)."""
        return []

    # -- reaching and reading nodes ----------------------------------------------------------

    def bridge(self, lab: str, network: str | None = None) -> str | None:
        """The host bridge the lab's nodes (of one of its `networks:`) are reached through (every
        connection is refused unless the host's route to the node goes out of it); None: the nodes are
        remote by design."""
        return names.lab_bridge(self.traits.links, lab, network)

    def birdc(self, node: Node | Router) -> str:
        """The shell command that talks to the node's BIRD (append a CLI command)."""
        raise NotImplementedError

    # -- faults on purpose (`labctl fail` / `repair`) ----------------------------------------

    fault_kinds: tuple[str, ...] = ()  # what `labctl fail` can do to this provider's nodes

    def fail(self, model: LabModel, node: Node | Router, kind: str) -> dict:
        """Break `kind` (bird | link | node) on the node; returns what repair needs (pids, ...)."""
        raise UsageError(
            f"`labctl fail {kind}` is not supported for the {self.name} provider",
            "faults on purpose work on netns labs; on VMs stop calico-node or the NIC by hand (`labctl ssh`)",
        )

    def repair(self, model: LabModel, node: Node | Router, kind: str, record) -> None:
        """Undo fail(kind) (`record` is what fail returned, {} if unknown); a no-op where nothing is broken."""
        raise UsageError(f"`labctl repair {kind}` is not supported for the {self.name} provider")


def make_lab_keys(d, lab_name: str, hosts: list[Node | Router], each=None) -> None:
    """The lab's SSH key (providers with `lab_key`: the nodes trust only it) and one host key per
    host (node or router), pinned in the lab's known_hosts before any of them boots or starts sshd.
    Keys already there are kept; `each(fn, hosts)` may make the host keys in parallel."""
    d.ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not d.ssh_key.exists():
        sh.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"labctl-{lab_name}", "-f", str(d.ssh_key)])
    os.chmod(d.ssh_key, 0o600)

    def host_key(n: Node | Router) -> str:
        nd = d.node_dir(n.name)
        nd.mkdir(parents=True, exist_ok=True, mode=0o700)
        hk = nd / "ssh_host_ed25519_key"
        if not hk.exists():
            host_key_pair(hk, n.name)
        key_type, key = Path(str(hk) + ".pub").read_text().split()[:2]
        return f"{n.address} {key_type} {key}\n"

    known = each(host_key, hosts) if each is not None else [host_key(n) for n in hosts]
    d.known_hosts.write_text("".join(known))
    os.chmod(d.known_hosts, 0o600)


def host_key_pair(path: Path, comment: str) -> None:
    """An ed25519 host key pair as `ssh-keygen -t ed25519 -N '' -C comment -f path` writes it, made
    in this process: a program started per node was a tenth of a big lab's bootstrap."""
    # cryptography is heavy to import and only bootstrap makes keys
    from cryptography.hazmat.primitives import serialization as ser  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption())
    public = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    Path(f"{path}.pub").write_bytes(public + f" {comment}\n".encode())
