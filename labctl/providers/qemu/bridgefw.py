"""Bridged traffic between a qemu lab's VMs and iptables' FORWARD chain.

Where br_netfilter is active (Docker loads it, and sets FORWARD's policy to DROP), frames the host
only bridges between two VMs pass the FORWARD chain and are dropped there. A bridge's own
`nf_call_iptables 0` does not help: the kernel calls iptables when the namespace's
net.bridge.bridge-nf-call-iptables OR the bridge's option is on (br_nf_pre_routing), and the
namespace's is the host-wide setting labctl must not change. So labctl accepts exactly its own
bridge's bridged frames, in and out of the same bridge (which routing never does: the host does not
forward), in FORWARD's first rule, marked with the lab's name, only when the chain would filter
them; `down` deletes that rule by its exact spec."""

from __future__ import annotations

import shutil
from pathlib import Path

from labctl.host import sh

NF_CALL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def bridged_through_iptables() -> bool:
    try:
        return NF_CALL.read_text().strip() == "1"
    except OSError:
        return False  # no br_netfilter: bridged frames never see iptables


def forward_chain() -> list[str]:
    """`iptables -S FORWARD` (the policy line first); [] without iptables."""
    if shutil.which("iptables") is None:
        return []
    p = sh.run(["iptables", "-w", "5", "-S", "FORWARD"], check=False)
    return p.stdout.splitlines() if p.returncode == 0 else []


def filters(chain: list[str]) -> bool:
    """Would this FORWARD chain decide anything about a frame: a policy other than ACCEPT, or any rule."""
    return bool(chain) and (chain[0] != "-P FORWARD ACCEPT" or len(chain) > 1)


def warning(chain: list[str], bridges: list[str]) -> str | None:
    """Preflight's note when bridged frames go through a FORWARD chain that drops by default."""
    if not (chain and chain[0].startswith("-P FORWARD ") and chain[0].split()[-1] != "ACCEPT"):
        return None
    return (
        f"bridged traffic passes iptables here (net.bridge.bridge-nf-call-iptables=1, br_netfilter) and FORWARD's "
        f"policy is {chain[0].split()[-1]} (Docker sets it): labctl accepts its own bridges' frames "
        f"({', '.join(bridges)}) in FORWARD's first rule, removed by `labctl down`"
    )


def rule(bridge: str, lab: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-m", "comment", "--comment", f"labctl {lab}", "-j", "ACCEPT"]


def has_rule(bridge: str, lab: str) -> bool:
    return sh.run(["iptables", "-w", "5", "-C", *rule(bridge, lab)], check=False).returncode == 0


def accept(bridge: str, lab: str) -> bool:
    """The rule for this bridge, when bridged frames would be filtered; True if it is there now."""
    if not bridged_through_iptables() or not filters(forward_chain()):
        return False
    if not has_rule(bridge, lab):
        r = rule(bridge, lab)
        sh.run(["iptables", "-w", "5", "-I", r[0], "1", *r[1:]])
    return True


def remove(bridge: str, lab: str) -> None:
    if shutil.which("iptables") is None:
        return
    for _ in range(10):  # one per `up` that added it; normally one
        if not has_rule(bridge, lab):
            return
        sh.run(["iptables", "-w", "5", "-D", *rule(bridge, lab)], check=False)
