"""The vm provider: the nodes are existing machines reached over SSH; playbooks do everything."""

from __future__ import annotations

from labctl.errors import UsageError
from labctl.live import hostkeys
from labctl.plan.layout import LabDir
from labctl.plan.model import LabModel, Node, Router
from labctl.providers.base import Provider, Remains


class VmProvider(Provider):
    name = "vm"
    up_playbook = "vm-up.yml"
    down_playbook = "vm-down.yml"
    dir: LabDir

    accept_new_host_keys = False  # set by Lab.up from --accept-new-host-keys

    def preflight(self, model: LabModel) -> list[str]:
        return self.checks(model)

    def checks(self, model: LabModel) -> list[str]:
        return []

    def birdc(self, node: Node | Router) -> str:
        """BIRD lives inside calico-node: Calico's birdcl on Calico's socket, through crictl."""
        s = "" if node.ssh.user == "root" else "sudo -n "
        return f"{s}crictl exec $({s}crictl ps -q --name calico-node | head -n1) birdcl -s /var/run/calico/bird.ctl"

    def check_host_keys(self, model: LabModel, progress) -> None:
        """Before ansible: every node's and jump host's key is pinned, or we stop here."""
        added = hostkeys.pin([n.to_data() for n in model.nodes], self.dir.known_hosts, self.accept_new_host_keys)
        for entry in added:
            progress.info(f"  pinned the host key of {entry} in {self.dir.known_hosts}")

    def ipip_supported(self) -> bool:
        return True  # real kernels have ipip; the host_prep role loads the module

    def bootstrap(self, model: LabModel, progress) -> dict:
        self.dir.ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.known_hosts.touch(mode=0o600, exist_ok=True)
        return {}

    def teardown(self, lab: LabModel | Remains, progress) -> None:
        return None

    def remove_nodes(self, model: LabModel, names: list[str], progress) -> None:
        raise UsageError(
            f"removing nodes ({', '.join(names)}) from a vm lab is not supported yet",
            "run `labctl down` and `labctl up` with the new topology",
        )
