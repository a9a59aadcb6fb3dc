"""The provider boundary: what differs between the ways a lab's nodes exist, as hooks and flags.

Everything outside labctl/providers/ asks the lab's provider (providers.get / providers.kind), never
its name. Adding a provider is a module here plus one line in providers.REGISTRY.

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
from pathlib import Path

from labctl.errors import UsageError
from labctl.host import sh
from labctl.plan import names
from labctl.spec.providers import traits


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

    def preflight(self, data: dict) -> list[str]:
        """Raise if this host cannot run the lab; return warnings."""
        return []

    def ipip_supported(self) -> bool:
        return True

    def netem_supported(self) -> bool | None:
        """Whether the nodes' kernel has tc netem (delay/jitter/loss); None: not known before the
        nodes are reached (then `labctl impair`/`up` find out on the node and say so)."""
        return None

    def host_shell(self, node):
        """A shell on the node that does not go through the node's own link (nsshell.NsShell), for
        what must work while that link is impaired; None: the node is reached over SSH only."""
        return None

    def bootstrap(self, data: dict, progress) -> dict:
        """Make the nodes exist and answer SSH; returns pids per node worth recording."""
        return {}

    def check_host_keys(self, data: dict, progress) -> None:
        return None

    def teardown(self, data: dict, progress) -> None:
        return None

    def remove_nodes(self, data: dict, names: list[str], progress) -> None:
        raise UsageError(
            f"removing nodes ({', '.join(names)}) from a {self.name} lab is not supported yet",
            "run `labctl down` and `labctl up` with the new topology",
        )

    # -- reaching and reading nodes ----------------------------------------------------------

    def bridge(self, lab: str, network: str | None = None) -> str | None:
        """The host bridge the lab's nodes (of one of its `networks:`) are reached through (every
        connection is refused unless the host's route to the node goes out of it); None: the nodes are
        remote by design."""
        return names.bridge(self.traits.links, lab, network) if self.traits.links else None

    def birdc(self, node: dict) -> str:
        """The shell command that talks to the node's BIRD (append a CLI command)."""
        raise NotImplementedError

    # -- faults on purpose (`labctl fail` / `repair`) ----------------------------------------

    fault_kinds: tuple[str, ...] = ()  # what `labctl fail` can do to this provider's nodes

    def fail(self, data: dict, node: dict, kind: str) -> dict:
        """Break `kind` (bird | link | node) on the node; returns what repair needs (pids, ...)."""
        raise UsageError(
            f"`labctl fail {kind}` is not supported for the {self.name} provider",
            "faults on purpose work on netns labs; on VMs stop calico-node or the NIC by hand (`labctl ssh`)",
        )

    def repair(self, data: dict, node: dict, kind: str, record: dict) -> None:
        """Undo fail(kind) (`record` is what fail returned, {} if unknown); a no-op where nothing is broken."""
        raise UsageError(f"`labctl repair {kind}` is not supported for the {self.name} provider")


def make_lab_keys(d, lab_name: str, hosts: list[dict], each=None) -> None:
    """The lab's SSH key (providers with `lab_key`: the nodes trust only it) and one host key per
    host (node or router), pinned in the lab's known_hosts before any of them boots or starts sshd.
    Keys already there are kept; `each(fn, hosts)` may make the host keys in parallel."""
    d.ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not d.ssh_key.exists():
        sh.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"labctl-{lab_name}", "-f", str(d.ssh_key)])
    os.chmod(d.ssh_key, 0o600)

    def host_key(n: dict) -> str:
        nd = d.node_dir(n["name"])
        nd.mkdir(parents=True, exist_ok=True, mode=0o700)
        hk = nd / "ssh_host_ed25519_key"
        if not hk.exists():
            host_key_pair(hk, n["name"])
        key_type, key = Path(str(hk) + ".pub").read_text().split()[:2]
        return f"{n['address']} {key_type} {key}\n"

    known = each(host_key, hosts) if each is not None else [host_key(n) for n in hosts]
    d.known_hosts.write_text("".join(known))
    os.chmod(d.known_hosts, 0o600)


def host_key_pair(path: Path, comment: str) -> None:
    """An ed25519 host key pair as `ssh-keygen -t ed25519 -N '' -C comment -f path` writes it, made
    in this process: a program started per node was a tenth of a big lab's bootstrap."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption())
    public = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    Path(f"{path}.pub").write_bytes(public + f" {comment}\n".encode())
