"""The vm provider's first phases (validate_inventory, preflight, host_prep) run FOR REAL over SSH,
in check mode, against netns nodes: Debian hosts reachable by SSH. This proves the SSH machinery
the two providers share: a non-root user with sudo (become), a jump host, and host-key pinning.

Check mode only, and only those tags: the nodes share this host's filesystem, so the vm lab is
removed by deleting its directory, never with `labctl down` (its reset would run on the host)."""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import SEED, host_snapshot, labctl, residue

pytestmark = pytest.mark.netns
USER = "lcsmoke"


@pytest.fixture(scope="module")
def nodes():
    """A running netns lab, and a sudo user its sshds let in with the lab key."""
    if not shutil.which("sudo"):
        pytest.fail("sudo is required (make deps installs it)")
    home = Path(tempfile.mkdtemp(prefix="lc", dir="/tmp"))
    d = yaml.safe_load(SEED.read_text())
    d["name"] = "lcvmn"
    d["network"] = {"lan": "10.91.0.0/16"}
    for i, node in enumerate(d["nodes"].values()):
        node["address"] = f"10.91.22.{i + 1}"
    topo = home / "nodes.yml"
    topo.write_text(yaml.safe_dump(d, sort_keys=False))
    sudoers = Path(f"/etc/sudoers.d/{USER}")
    user_home = Path(f"/tmp/lcsmoke-home-{os.getpid()}")  # not inside the 0700 temp dir: sshd reads it as the user
    created_user = False
    before = host_snapshot(home)
    try:
        up = labctl("up", "-t", topo, home=home / "labs")
        assert up.returncode == 0, up.stderr
        try:
            pwd.getpwnam(USER)
            pytest.fail(f"user {USER} already exists on this host; this test creates and removes it")
        except KeyError:
            pass
        subprocess.run(["useradd", "-m", "-d", str(user_home), "-s", "/bin/bash", USER], check=True)
        created_user = True
        # no password, but not locked: sshd without PAM refuses locked accounts even for keys
        subprocess.run(["usermod", "-p", "*", USER], check=True)
        # the user's own authorized_keys, as on a VM (sshd reads it as the user)
        dot_ssh = Path(pwd.getpwnam(USER).pw_dir) / ".ssh"
        dot_ssh.mkdir(mode=0o700, exist_ok=True)
        pub = (home / "labs" / "lcvmn" / "ssh" / "id_ed25519.pub").read_text()
        (dot_ssh / "authorized_keys").write_text(pub)
        subprocess.run(["chown", "-R", f"{USER}:", str(dot_ssh)], check=True)
        sudoers.write_text(f"{USER} ALL=(ALL) NOPASSWD:ALL\n")
        os.chmod(sudoers, 0o440)
        yield {
            "home": home,
            "key": home / "labs" / "lcvmn" / "ssh" / "id_ed25519",
            "addresses": [f"10.91.22.{i}" for i in (1, 2, 3)],
        }
    finally:
        # down first: the user's SSH sessions live in the node namespaces and userdel refuses
        # to remove a user with running processes
        down = labctl("down", "-t", topo, home=home / "labs")
        if down.returncode != 0:  # by the lab's name too, so a failed down -t never leaves the lab running
            labctl("down", "--name", "lcvmn", home=home / "labs")
        sudoers.unlink(missing_ok=True)
        if created_user:
            gone = subprocess.run(["userdel", "-r", USER], capture_output=True, text=True)
            assert gone.returncode in (0, 12), gone.stderr  # 12: home dir already gone
        left = residue(before, host_snapshot(home))
        shutil.rmtree(home, ignore_errors=True)
        assert down.returncode == 0 and left == {}, (down.stderr, left)


def vm_topology(nodes, path: Path) -> Path:
    m, w1, w2 = nodes["addresses"]
    t = {
        "name": "lcvmx",
        "provider": "vm",
        "network": {"lan": "10.91.0.0/16"},
        "kubernetes": {"version": "1.34", "pod_subnet": "192.168.0.0/16", "service_subnet": "10.96.0.0/12"},
        "calico": {"version": "v3.30.7", "encapsulation": "IPIP", "block_size": 24},
        "defaults": {"interface": "ens192", "ssh": {"user": USER, "key": str(nodes["key"]), "jump": f"root@{m}"}},
        "nodes": {
            "k8s-master": {"role": "control-plane", "address": m, "ssh": {"user": USER, "key": str(nodes["key"])}},
            "k8s-worker-1": {"role": "worker", "address": w1, "labels": {"worker": "no-1"}},
            "k8s-worker-2": {"role": "worker", "address": w2, "labels": {"worker": "no-2"}},
        },
    }
    path.write_text(yaml.safe_dump(t, sort_keys=False))
    return path


def run_check(nodes, topo, *extra, tags="preflight,host_prep"):
    return labctl(
        "up",
        "-t",
        topo,
        "--check",
        "--tags",
        tags,
        "-e",
        "preflight_unique_product_uuid=false",
        *extra,
        home=nodes["home"] / "vmlabs",
        timeout=600,
    )


def test_vm_phases_over_ssh_with_become_jump_and_pinned_host_keys(nodes):
    topo = vm_topology(nodes, nodes["home"] / "vm.yml")
    lab = nodes["home"] / "vmlabs" / "lcvmx"
    try:
        # 1. keys never seen: refused, and the message says how to accept them
        first = run_check(nodes, topo)
        assert first.returncode == 1, first.stderr
        assert "not in the lab's known_hosts" in first.stderr and "--accept-new-host-keys" in first.stderr
        assert "jump host 10.91.22.1" in first.stderr, first.stderr  # named, not a bare "connection closed"

        # 2. accepted and pinned: validate_inventory + preflight + host_prep run in check mode;
        #    workers go through the jump host, tasks run as root through sudo
        second = run_check(nodes, topo, "--accept-new-host-keys")
        assert second.returncode == 0, second.stderr
        for phase in ("Validate inventory", "Preflight", "Host preparation"):
            assert f"==> Running phase: {phase}" in second.stderr
        assert "Container runtime" not in second.stderr
        assert "TASK Become gives root" in second.stderr and "TASK Kernel settings" in second.stderr
        known = (lab / "ssh" / "known_hosts").read_text()
        for addr in nodes["addresses"]:
            assert addr in known
        assert second.stderr.count("pinned the host key of") == 3
        # the sudo user really was the one logging in (sshd logs it per node)
        node_log = (nodes["home"] / "labs" / "lcvmn" / "nodes" / "k8s-worker-1" / "sshd.log").read_text()
        assert f"Accepted publickey for {USER}" in node_log
        # the worker's connection came through the jump host (the master), not from the host
        assert "from 10.91.22.1 port" in node_log
        # check mode changed nothing on the host
        assert not Path("/etc/sysctl.d/99-labctl-k8s.conf").exists()

        # 2b. the container runtime phase in check mode on nodes without containerd (issue 11
        #     item 5: it died on the skipped version command), with the distro package that the
        #     Debian mirror serves; the hostname and /etc/hosts tasks of host_prep run too
        runtime = run_check(nodes, topo, "-e", "containerd_source=distro", tags="host_prep,containerd")
        assert runtime.returncode == 0, runtime.stderr
        assert "==> Running phase: Container runtime" in runtime.stderr
        assert "TASK Configuration (schema version 2 for 1.x, 3 for 2.x)" in runtime.stderr
        assert "TASK Hostname is the node name" in runtime.stderr
        assert not Path("/etc/containerd").exists() and not Path("/etc/crictl.yaml").exists()

        # 3. a changed host key is refused, --accept-new-host-keys or not
        lines = known.splitlines()
        fake = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(nodes["home"] / "fake")], check=True
        )
        assert fake.returncode == 0
        fake_key = (nodes["home"] / "fake.pub").read_text().split()[1]
        lines = [
            " ".join(x.split()[:2] + [fake_key]) if x.startswith(nodes["addresses"][2] + " ") else x for x in lines
        ]
        (lab / "ssh" / "known_hosts").write_text("\n".join(lines) + "\n")
        third = run_check(nodes, topo, "--accept-new-host-keys")
        assert third.returncode == 1
        assert "k8s-worker-2: host key CHANGED" in third.stderr
        assert "Running phase: Preflight" not in third.stderr  # stopped before ansible
    finally:
        # never `labctl down` here: the vm reset would run against this host's filesystem
        shutil.rmtree(lab, ignore_errors=True)
