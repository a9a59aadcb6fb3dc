"""Where things are: the lab directory layout (the one place that defines it), the labs home,
and the playbooks and templates shipped with labctl."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import UsageError

_PKG = Path(__file__).resolve().parent.parent


def shipped(name: str) -> Path:
    """`playbooks` or `templates`: inside the installed package, or at the top of a checkout."""
    for base in (_PKG / name, _PKG.parent / name):
        if base.is_dir():
            return base
    raise FileNotFoundError(f"labctl installation is missing its {name}/ directory")


def home() -> Path:
    """Where labs live: $LABCTL_HOME, else /var/lib/labctl for root, else ~/.local/state/labctl."""
    if env := os.environ.get("LABCTL_HOME"):
        return Path(env).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/lib/labctl")
    return Path.home() / ".local/state/labctl"


def seed_topology() -> Path:
    """The built-in default lab: inventories/seed/topology.yml, shipped as a template too."""
    for p in (_PKG.parent / "inventories/seed/topology.yml", shipped("templates") / "seed-topology.yml"):
        if p.is_file():
            return p
    raise FileNotFoundError("the seed topology is missing from this installation")


def removed_record() -> Path:
    """Names of labs `down` removed: a second `down --name` of one is a no-op, of a typo an error.
    A dot file: lab names start with a letter, so it is never taken for a lab."""
    return home() / ".removed"


@dataclass(frozen=True)
class LabDir:
    root: Path

    def is_lab(self) -> bool:
        """render writes topology-data.json first: a directory holding it is (or was) a lab's."""
        return self.topology_data.is_file()

    # labctl's mark on a lab dir: the only kind of directory `down` removes. render and every
    # up/down (the lab lock) write it. A lab dir from before the mark is known by the files labctl
    # alone writes there (state.json, topology-data.json); the next up or down marks it.
    MARK_TEXT = "labctl lab directory: `labctl down` removes it\n"

    @property
    def mark(self) -> Path:
        return self.root / ".labctl-lab"

    def is_marked(self) -> bool:
        return self.mark.is_file() or self.topology_data.is_file() or self.state.is_file()

    def claim(self) -> None:
        """Make the lab dir (0700) and mark it labctl's; a directory of that name that is not a lab's
        (LABCTL_HOME/images, say) is refused, never taken over."""
        self.refuse_unmarked()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.mark.is_file():
            self.mark.write_text(self.MARK_TEXT)

    def refuse_unmarked(self) -> None:
        """Raise if the directory exists with something in it and without labctl's mark."""
        try:
            if self.is_marked() or not self.root.exists() or not any(self.root.iterdir()):
                return
        except PermissionError:
            raise  # not bad input: the cli's one line says to run as root or own LABCTL_HOME
        except OSError as e:
            raise UsageError(f"cannot read {self.root}: {e.strerror}") from None
        raise UsageError(
            f"{self.root} is not a labctl lab (no {self.mark.name}, state.json or topology-data.json in it): "
            "refusing to touch it",
            "labctl writes and removes only the lab directories it made; name the lab differently",
        )

    def is_live(self) -> bool:
        """`up` writes state.json before it creates anything on a host, `down` removes it last."""
        return self.state.exists()

    # inputs and rendered files (render writes these, nothing else)
    @property
    def topology(self) -> Path:
        return self.root / "topology.yml"

    @property
    def topology_data(self) -> Path:
        return self.root / "topology-data.json"

    @property
    def inventory(self) -> Path:
        return self.root / "ansible-inventory.yml"

    @property
    def ansible_cfg(self) -> Path:
        return self.root / "ansible.cfg"

    @property
    def kubeadm_init(self) -> Path:
        return self.root / "kubeadm" / "init.yaml"

    def kubeadm_join(self, node: str) -> Path:
        return self.root / "kubeadm" / f"join-{node}.yaml"

    @property
    def calico_resources(self) -> Path:
        return self.root / "calico" / "custom-resources.yaml"

    @property
    def calico_bgp(self) -> Path:
        return self.root / "calico" / "bgp.yaml"

    @property
    def calico_nodes(self) -> Path:
        return self.root / "calico" / "nodes.yaml"

    @property
    def node_labels(self) -> Path:
        return self.root / "node-labels.yaml"

    def bird_conf(self, node: str) -> Path:
        return self.root / "bird" / f"{node}.conf"

    # lab runtime
    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def runner(self) -> Path:
        """ansible-runner's private data dir (artifacts of each run)."""
        return self.root / "runner"

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def ssh_key(self) -> Path:
        return self.ssh / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh / "known_hosts"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh / "authorized_keys"

    @property
    def ssh_config(self) -> Path:
        return self.ssh / "ssh_config"

    @property
    def control_dir(self) -> Path:
        """ansible's SSH ControlPersist sockets, closed by down."""
        return self.ssh / "cp"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def node_dir(self, node: str) -> Path:
        """netns: the node's own files (sshd config and host key, BIRD socket, pid files, labels)."""
        return self.root / "nodes" / node

    def node_home(self, node: str) -> Path:
        """root's home inside a netns node: the host's dotfiles stay the host's."""
        return self.node_dir(node) / "root"

    def bird_socket(self, node: str) -> Path:
        return self.node_dir(node) / "bird.ctl"


def lab_dir(name: str) -> LabDir:
    return LabDir(home() / name)
