"""The reset role's script, its network steps for real: in a throwaway network namespace (its own
routes, links and iptables tables), what calico-node and kube-proxy leave on a node goes, the rest
stays, and a second run changes nothing. The file steps are covered by test_vm_playbooks (paths) and
test_qemu (on VMs)."""

import os
import shlex
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "playbooks/roles/reset"
NS = f"lcreset{os.getpid()}"

pytestmark = pytest.mark.netns


def network_steps() -> str:
    """The script's header, its route/link and iptables steps, and its exit: what can run in a netns
    without touching the host's files."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["quote"] = shlex.quote  # ansible's quote filter
    values = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    values |= {"inventory_hostname": "n1", "ansible_user": "labctl", "lab_name": "rs"}
    lines = env.from_string((ROLE / "templates/reset.sh.j2").read_text()).render(**values).splitlines()

    def section(start: str, stop: str) -> list[str]:
        i = next(i for i, x in enumerate(lines) if x.startswith(start))
        j = next(j for j, x in enumerate(lines) if j > i and x.startswith(stop))
        return lines[i:j]

    head = section("set -u", "# kubeadm reset only")
    return "\n".join(
        head
        + section("# BIRD and felix", "home=")
        + section("# kube-proxy's and Calico's chains", "# what host_prep")
        + ['[ -z "$errors" ] || exit 1', ""]
    )


def ns(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", NS, *cmd], capture_output=True, text=True, check=check)


@pytest.fixture
def node():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


def test_reset_removes_calicos_and_kube_proxys_leftovers_and_keeps_the_rest(node):
    setup = """
set -e
ip link set lo up
ip link add lan0 type veth peer name lan1 && ip link set lan1 up && ip link set lan0 up && ip addr add 10.191.0.2/24 dev lan0
ip route add 10.191.64.0/26 via 10.191.0.3 proto bird
ip route add blackhole 10.191.65.0/26 proto bird
ip route add 10.191.66.0/26 via 10.191.0.4 proto 80
ip route add 10.191.99.0/24 via 10.191.0.9
ip link add vxlan.calico type vxlan id 4096 dstport 4789 dev lan0
iptables -N cali-INPUT && iptables -A cali-INPUT -j ACCEPT && iptables -A INPUT -j cali-INPUT
iptables -A INPUT -s 10.191.0.9 -j ACCEPT
iptables -t nat -N KUBE-SERVICES && iptables -t nat -A PREROUTING -m comment --comment kube -j KUBE-SERVICES
iptables -t nat -N KUBE-SVC-X && iptables -t nat -A KUBE-SERVICES -j KUBE-SVC-X
iptables -t raw -N cali-PREROUTING && iptables -t raw -A PREROUTING -j cali-PREROUTING
ip6tables -N cali-FORWARD && ip6tables -A FORWARD -j cali-FORWARD
"""
    ns("sh", "-c", setup)
    script = network_steps()
    first = ns("sh", "-c", script, check=False)
    assert first.returncode == 0, first.stderr
    changed = [x for x in first.stdout.splitlines() if x.startswith("CHANGED")]
    assert "CHANGED iptables: cali and KUBE chains" in changed, first.stdout
    assert "CHANGED ip6tables: cali and KUBE chains" in changed, first.stdout
    assert "CHANGED deleted vxlan.calico" in changed, first.stdout
    assert sum("proto bird" in x for x in changed) == 2 and sum("proto 80" in x for x in changed) == 1, changed

    routes = ns("ip", "-4", "route", "show").stdout
    assert "10.191.99.0/24 via 10.191.0.9" in routes and "10.191.6" not in routes, routes
    assert ns("ip", "link", "show", "vxlan.calico", check=False).returncode != 0
    for tool in ("iptables-save", "ip6tables-save"):
        saved = ns(tool).stdout
        assert "cali-" not in saved and "KUBE-" not in saved, saved
    assert "-A INPUT -s 10.191.0.9/32 -j ACCEPT" in ns("iptables-save").stdout  # not ours: kept

    again = ns("sh", "-c", script, check=False)
    assert again.returncode == 0 and "CHANGED" not in again.stdout, again.stdout + again.stderr


def test_reset_of_a_node_without_kube_or_calico_changes_nothing(node):
    ns("ip", "link", "set", "lo", "up")
    ns("iptables", "-A", "INPUT", "-s", "10.191.0.9", "-j", "ACCEPT")
    p = ns("sh", "-c", network_steps(), check=False)
    assert p.returncode == 0 and p.stdout == "", p.stdout + p.stderr
    assert "-A INPUT -s 10.191.0.9/32 -j ACCEPT" in ns("iptables-save").stdout
