"""provider: qemu for real: labctl builds the image, boots two VMs once for the module (TCG here: KVM
hangs on this kind of host, see vm-notes), runs the vm provider's first roles on them, and the tests
that follow use that lab in file order: idempotence, check mode, no internet, a killed VM, `down`.
Tests that boot VMs carry the `qemu` marker.

Runs under the VM lock (flock /tmp/lc-qemu.lock): its own bridges, LANs (10.207.0.0/24,
10.172.0.0/24, 10.173.0.0/24) and lab names starting with q. The image cache is shared across runs
(LABCTL_IMAGES): a cold build costs about a minute, once."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import QEMU_IMAGES, labctl
from conftest import qemu_residue as residue
from labctl.plan import names

LAN = "10.207.0"


def topology(tmp_path: Path, name: str, lan: str = LAN, workers: int = 2, **qemu) -> Path:
    d = {
        "name": name,
        "provider": "qemu",
        "network": {"lan": f"{lan}.0/24"},
        "defaults": {"interface": "lan0"},  # not the kernel's eth0: labctl names the NIC in the VM
        # 1 vCPU / 1 GiB each: three TCG guests on a 2-core host (the preflight knobs below agree)
        "qemu": {"control_plane": {"cpus": 1, "memory": 1024}, "worker": {"cpus": 1, "memory": 1024}} | qemu,
        "nodes": {f"{name}-cp": {"role": "control-plane", "address": f"{lan}.11"}}
        | {f"{name}-w{i}": {"role": "worker", "address": f"{lan}.{11 + i}"} for i in range(1, workers + 1)},
    }
    p = tmp_path / f"{name}.yml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


ROLES = Path(__file__).resolve().parent.parent / "playbooks" / "roles"
# tasks that start no Python on the node: shell probes and what runs on the controller
NO_MODULE = {"ansible.builtin." + a for a in ("raw", "set_fact", "assert", "debug", "meta", "fail")}


def module_tasks(*roles: str) -> set[str]:
    """Names of the tasks of these roles that run a module on the node."""

    def walk(items):
        for t in items or []:
            if "block" in t:
                yield from walk(t["block"])
                yield from walk(t.get("rescue"))
            elif not NO_MODULE & t.keys():
                yield t["name"]

    return {
        n
        for r in roles
        for d in ("tasks", "handlers")
        for f in (ROLES / r / d).glob("*.yml")
        for n in walk(yaml.safe_load(f.read_text()))
    }


def task_statuses(stderr: str) -> list[tuple[str, str, str]]:
    """(task, host, status) for every host line of an `up`'s progress."""
    out, task = [], None
    for line in stderr.splitlines():
        if m := re.match(r"^  (?:TASK|HANDLER) (.+)$", line):
            task = m.group(1)
        elif (m := re.match(r"^    (\S+)\s+(\w+)", line)) and task is not None:
            out.append((task, m.group(1), m.group(2)))
    return out


def changed_tasks(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if re.match(r"^\s{4}\S+\s+changed\s", line)]


@pytest.mark.netns
def test_validation_rejects_what_cannot_boot(tmp_path, qhome):
    bad = topology(tmp_path, "qbad", control_plane={"cpus": 1, "memory": 512})
    p = labctl("validate", "-t", bad, home=qhome)
    assert p.returncode == 2 and "qemu.control_plane.memory: 512 MiB is too little" in p.stderr, p.stderr
    missing = topology(tmp_path, "qbad", image=str(tmp_path / "nope.qcow2"), sha256="0" * 64)
    p = labctl("validate", "-t", missing, home=qhome)
    assert p.returncode == 2 and "nope.qcow2' is not a file" in p.stderr, p.stderr
    img = tmp_path / "cloud.qcow2"
    img.write_bytes(b"not really an image")
    wrong = topology(tmp_path, "qbad", image=str(img), sha256="0" * 64)
    p = labctl("validate", "-t", wrong, home=qhome)
    assert p.returncode == 2 and "qemu.sha256:" in p.stderr and "not " + "0" * 64 in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.netns
def test_a_cloud_image_gets_its_settings_from_a_nocloud_seed(tmp_path):
    """A user-supplied cloud image boots with a cloud-init NoCloud seed made by cloud-localds. No
    cloud image can be downloaded here, so this reads the seed ISO back instead of booting it: the
    volume label cloud-init looks for, and the same settings the config disk of labctl's image carries."""
    from labctl.providers.qemu import machine

    nd = tmp_path / "node"
    nd.mkdir()
    key = nd / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qcloud-w1", "-f", str(key)], check=True)
    node = SimpleNamespace(name="qcloud-w1", address="10.174.0.12", interface="ens3", network=None)
    model = SimpleNamespace(
        name="qcloud",
        network=SimpleNamespace(lan="10.174.0.0/24", gateway="10.174.0.254"),
        networks=None,
        nodes=[SimpleNamespace(name="qcloud-cp", address="10.174.0.11"), node],
    )
    iso = machine.seed_iso(nd, node, model, "ssh-ed25519 AAAAlabkey labctl-qcloud\n")
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Volume id: cidata$", info, re.M), info

    def read(name: str) -> dict:
        out = subprocess.run(["isoinfo", "-R", "-x", f"/{name}", "-i", str(iso)], capture_output=True, check=True)
        return yaml.safe_load(out.stdout)

    user = read("user-data")
    assert user["hostname"] == "qcloud-w1"
    assert user["users"][0]["name"] == "labctl" and user["users"][0]["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAAlabkey labctl-qcloud"]
    assert user["ssh_pwauth"] is False and user["ssh_genkeytypes"] == []
    assert user["ssh_keys"]["ed25519_private"] == key.read_text()  # the host key pinned before first contact
    assert "10.174.0.11 qcloud-cp" in user["write_files"][0]["content"]
    assert "10.174.0.254 labctl-proxy" in user["write_files"][0]["content"]  # the proxy on the host
    assert read("meta-data")["instance-id"] == "labctl-qcloud-qcloud-w1"
    lan = read("network-config")["ethernets"]["lan"]
    assert lan == {
        "match": {"macaddress": machine.mac("qcloud", "qcloud-w1")},
        "set-name": "ens3",
        "addresses": ["10.174.0.12/24"],
        # the service VIP needs a route (the host does not forward: nothing leaves), and CoreDNS a resolver
        "routes": [{"to": "default", "via": "10.174.0.254"}],
        "nameservers": {"addresses": ["10.174.0.254"]},
    }
    assert not (nd / "seed").exists()  # the sources (with the host key) do not stay behind


@pytest.mark.netns
def test_lan_overlapping_a_host_route_is_refused_before_anything_exists(tmp_path, qhome):
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route"], capture_output=True, text=True).stdout)
    uplink = next(r["dev"] for r in routes if r.get("dst") == "default")
    net = next(r["dst"] for r in routes if r.get("dev") == uplink and "/" in r.get("dst", ""))
    # a /24 inside the host's route (the host's own subnet): never used, refused by preflight
    import ipaddress

    sub = next(ipaddress.IPv4Network(net).subnets(new_prefix=max(24, ipaddress.IPv4Network(net).prefixlen)))
    t = topology(tmp_path, "qroute", lan=str(sub.network_address).rsplit(".", 1)[0])
    p = labctl("up", "-t", t, home=qhome)
    assert p.returncode == 1 and "network.lan" in p.stderr and "overlaps the host route" in p.stderr, p.stderr
    assert residue(qhome, "qroute") == []


@pytest.mark.netns
def test_a_lab_of_the_same_name_in_another_home_keeps_its_links(tmp_path, qhome):
    """Two labctl homes, one lab name: the second `up` is refused, and its `down` must not take the
    first lab's bridge (the link names come from the lab name alone). The first lab is stood in for
    by its bridge: no VM is needed to show whose links `down` removes."""
    from labctl.providers.qemu import machine

    t = topology(tmp_path, "qdup", lan="10.193.0", workers=0)
    br = names.bridge("lq", "qdup")
    subprocess.run(["ip", "link", "add", br, "type", "bridge"], check=True)
    try:
        p = labctl("up", "-t", t, "--tags", "never", home=qhome)
        assert p.returncode == 1 and "already running from another labctl home" in p.stderr, p.stderr
        d = labctl("down", "-t", t, home=qhome)
        assert d.returncode == 0, d.stderr
        assert machine.link_exists(br)  # the other home's lab keeps its network
    finally:
        subprocess.run(["ip", "link", "del", br], check=False)
    assert residue(qhome, "qdup") == []


KNOBS = ["-e", "preflight_min_cpus=1", "-e", "preflight_min_memory_mb=900", "-e", "containerd_source=distro"]
TAGS = "preflight,host_prep,containerd"
# the smallest lab that proves the roles on both groups (control plane and worker); every step below
# uses it in turn, so the VMs boot once for the module
NODES = ("qreal-cp", "qreal-w1")


@dataclass
class QLab:
    home: Path
    topology: Path
    up: subprocess.CompletedProcess
    state: dict
    cached_build: float  # seconds of an `image build` with the image already there


@pytest.fixture(scope="module")
def qlab(tmp_path_factory):
    """A 2-VM lab with preflight, host_prep and containerd run for real; the module's tests use it in
    file order and the last one takes it down (a safety `down` follows if a test failed before)."""
    home = Path(tempfile.mkdtemp(prefix="lc", dir="/tmp"))
    t = topology(tmp_path_factory.mktemp("qreal"), "qreal", workers=1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LABCTL_IMAGES", str(QEMU_IMAGES))
            QEMU_IMAGES.mkdir(parents=True, exist_ok=True)
            # the image: built once per recipe, then a no-op
            labctl("image", "build", home=home, check=True, timeout=900)
            t0 = time.monotonic()
            labctl("image", "build", home=home, check=True)
            cached = time.monotonic() - t0
            up = labctl("up", "-t", t, "--tags", TAGS, *KNOBS, home=home, timeout=1500)
            state = json.loads((home / "qreal" / "state.json").read_text()) if up.returncode == 0 else {}
            yield QLab(home, t, up, state, cached)
    finally:
        if (home / "qreal").exists():
            labctl("down", "-t", t, home=home, timeout=600)
        left = residue(home, "qreal")
        shutil.rmtree(home, ignore_errors=True)
        assert left == []


def print_timings(qlab: QLab) -> None:
    """The newest `up` log's phase, task and host lines (timestamped): pytest -rP shows them."""
    log = sorted((qlab.home / "qreal" / "logs").glob("up-*.log"))[-1]
    lines = log.read_text().splitlines()
    print("\n".join(x for x in lines if re.match(r"\S+ (==>|  TASK|  HANDLER|    \S+\s+\w+\s+\d)", x)))
    print(f"load average {os.getloadavg()}")


def on_vm(qlab: QLab, node: str, script: str) -> subprocess.CompletedProcess:
    return labctl("exec", "-n", "qreal", node, "--", "sudo", "sh", "-c", script, home=qlab.home, check=True)


@pytest.mark.qemu
def test_vms_run_the_first_roles_for_real(qlab):
    assert qlab.cached_build < 3.0, qlab.cached_build  # <= 1 s of work, plus the interpreter's start
    p = qlab.up
    assert p.returncode == 0, p.stderr[-3000:]
    print_timings(qlab)
    assert qlab.state["qemu"]["accel"] in ("kvm", "tcg")
    if qlab.state["qemu"]["accel"] == "tcg":
        assert p.stderr.count("KVM unusable here") == 1, p.stderr  # one warning saying why
    for n in NODES:
        assert (qlab.home / "qreal" / "nodes" / n / "console.log").stat().st_size > 0
        assert (qlab.home / "qreal" / "nodes" / n / "disk.qcow2").exists()
        pid = qlab.state["qemu"]["pids"][n]
        assert b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes()
    # on the VMs: what the roles promise
    for n in NODES:
        script = (
            "hostname; systemctl is-active containerd; grep -c 'SystemdCgroup = true' /etc/containerd/config.toml;"
            " swapon --show --noheadings | wc -l; sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables;"
            " test -d /sys/module/br_netfilter && test -d /sys/module/overlay && echo modules;"
            " cat /etc/apt/apt.conf.d/95labctl-proxy;"
            " sed -n '/^# BEGIN labctl lab qreal$/,/^# END labctl lab qreal$/p' /etc/hosts | grep -c ' qreal-'"
        )
        out = on_vm(qlab, n, script).stdout
        assert out.split("\n")[:7] == [n, "active", "1", "0", "1", "1", "modules"], (n, out)
        assert "http://labctl-proxy:3143" in out  # the lab's proxy, which apt used
        assert out.strip().endswith("\n2"), out  # every node by name in host_prep's block of /etc/hosts
        # what keeps a first run short under TCG (docs/vm-speed.md): containerd and runc without runc's
        # recommended criu and its dependencies; the image's apt fetches no Translation index, dpkg no fsync
        fast = on_vm(
            qlab, n, "dpkg -l criu python3-protobuf 2>/dev/null | grep -c ^ii; apt-config dump Acquire::Languages"
        )
        assert fast.stdout.split("\n")[0] == "0" and 'Acquire::Languages:: "none";' in fast.stdout, fast.stdout
        assert on_vm(qlab, n, "cat /etc/dpkg/dpkg.cfg.d/90labctl-unsafe-io").stdout.strip() == "force-unsafe-io"
    # the host did not start routing for the lab
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"


@pytest.mark.qemu
def test_a_second_up_changes_nothing_and_starts_no_module(qlab):
    again = labctl("up", "-t", qlab.topology, "--tags", TAGS, *KNOBS, home=qlab.home, timeout=1500)
    assert again.returncode == 0, again.stderr[-3000:]
    print_timings(qlab)
    assert changed_tasks(again.stderr) == [], again.stderr
    assert "booting" not in again.stderr  # the running VMs were kept
    # the probes saw nothing to do: every task that would start a Python on the VMs was skipped
    ran = {task for task, _, status in task_statuses(again.stderr) if status != "skipped"}
    modules = module_tasks("preflight", "host_prep", "containerd")
    assert len(modules) > 20 and "Kernel settings" in modules
    assert sorted(ran & modules) == ["Wait for SSH"], again.stderr  # it proves Python is there


@pytest.mark.qemu
def test_check_mode_on_the_provisioned_vms_predicts_no_change(qlab):
    check = labctl("up", "-t", qlab.topology, "--check", "--tags", TAGS, *KNOBS, home=qlab.home, timeout=900)
    assert check.returncode == 0, check.stderr[-3000:]
    assert changed_tasks(check.stderr) == [], check.stderr
    # a node whose file drifted: check mode names the task that would fix it, and changes nothing
    on_vm(qlab, "qreal-w1", "echo 'vm.swappiness = 1' >> /etc/sysctl.d/99-labctl-k8s.conf")
    check = labctl("up", "-t", qlab.topology, "--check", "--tags", "host_prep", *KNOBS, home=qlab.home, timeout=900)
    assert check.returncode == 0, check.stderr[-3000:]
    changed = [(task, host) for task, host, status in task_statuses(check.stderr) if status == "changed"]
    assert changed == [("Kernel settings", "qreal-w1")], check.stderr
    assert "vm.swappiness" in on_vm(qlab, "qreal-w1", "cat /etc/sysctl.d/99-labctl-k8s.conf").stdout
    fix = labctl("up", "-t", qlab.topology, "--tags", "host_prep", *KNOBS, home=qlab.home, timeout=900)
    assert fix.returncode == 0, fix.stderr[-3000:]
    assert "vm.swappiness" not in on_vm(qlab, "qreal-w1", "cat /etc/sysctl.d/99-labctl-k8s.conf").stdout


@pytest.mark.qemu
def test_kube_packages_without_internet_fails_at_once_naming_the_host(qlab):
    # beyond the mirror there is no internet here: a clear failure naming the host, not a hang
    t0 = time.monotonic()
    net = labctl("up", "-t", qlab.topology, "--tags", "kube_packages", *KNOBS, home=qlab.home, timeout=900)
    assert net.returncode != 0
    last = net.stderr.strip().splitlines()[-1]
    assert "pkgs.k8s.io" in last, last
    assert time.monotonic() - t0 < 600


@pytest.mark.qemu
def test_a_killed_vm_is_booted_again_on_its_own_disk(qlab):
    # a VM that died is booted again by the next `up`, on its own disk; the others are kept
    old = qlab.state["qemu"]["pids"]["qreal-w1"]
    os.kill(old, signal.SIGKILL)
    p = labctl("up", "-t", qlab.topology, "--tags", "never", home=qlab.home, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "booting qreal-w1 (" in p.stderr, p.stderr
    pids = json.loads((qlab.home / "qreal" / "state.json").read_text())["qemu"]["pids"]
    assert pids["qreal-w1"] != old and pids["qreal-cp"] == qlab.state["qemu"]["pids"]["qreal-cp"]
    # what the roles wrote survived the kill (its disk is kept)
    r = on_vm(qlab, "qreal-w1", "grep -c 'SystemdCgroup = true' /etc/containerd/config.toml")
    assert r.stdout.strip() == "1", r.stdout + r.stderr


@pytest.mark.qemu
def test_down_resets_every_vm_and_leaves_nothing(qlab):
    t0 = time.monotonic()
    d = labctl("down", "-t", qlab.topology, home=qlab.home, timeout=600)
    took = time.monotonic() - t0
    print(f"down took {took:.1f} s\n{d.stderr}")  # where the time went: pytest -rP shows it
    assert d.returncode == 0, d.stderr
    # the reset role ran for real on every VM and undid something on each (containerd's config, ...)
    reset = d.stderr.split("TASK Reset kubeadm", 1)[1].split("TASK", 1)[0]
    assert sorted(re.findall(r"(qreal-\w+)\s+changed", reset)) == sorted(NODES), d.stderr
    assert residue(qlab.home, "qreal") == []
    # one script per VM, no Python module per step (as ~40 tasks it took 173-189 s here); the target
    # is 15 s, the bound leaves room for a host loaded by other tests
    assert took < 90, took


def up_in_background(topo: Path, home: Path) -> subprocess.Popen:
    env = dict(os.environ, LABCTL_HOME=str(home), NO_COLOR="1")
    argv = [sys.executable, "-m", "labctl", "up", "-t", str(topo), "--tags", "never"]
    return subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)


@pytest.mark.qemu
def test_down_after_ctrl_c_at_boot_then_two_labs_side_by_side(tmp_path, qhome):
    """`down` after an `up` interrupted while the VM boots removes everything; then two labs on
    different LANs boot at the same time, both answer SSH, and both go down clean. One-node labs:
    each TCG boot costs tens of seconds."""
    a = topology(tmp_path, "qsidea", lan="10.172.0", workers=0)
    b = topology(tmp_path, "qsideb", lan="10.173.0", workers=0)
    try:
        p = up_in_background(b, qhome)
        seen = []
        for line in p.stderr:
            seen.append(line)
            if "waiting for SSH" in line:
                p.send_signal(signal.SIGINT)
                break
        seen.append(p.communicate(timeout=120)[1])
        assert p.returncode == 130, "".join(seen)
        state = json.loads((qhome / "qsideb" / "state.json").read_text())
        assert state["phase"] == "interrupted", state
        assert b"qemu-system" in Path(f"/proc/{state['qemu']['pids']['qsideb-cp']}/cmdline").read_bytes()
        d = labctl("down", "-t", b, home=qhome, timeout=300)
        assert d.returncode == 0, d.stderr
        assert "reset (qemu)" not in d.stderr  # a VM that never finished booting has nothing to undo
        assert residue(qhome, "qsideb") == []

        procs = [up_in_background(t, qhome) for t in (a, b)]
        errs = [p.communicate(timeout=900)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errs
        for name in ("qsidea", "qsideb"):
            r = labctl("exec", "-n", name, f"{name}-cp", "--", "hostname", home=qhome)
            assert r.stdout.strip() == f"{name}-cp", r.stderr
    finally:
        downs = [labctl("down", "-t", t, home=qhome, timeout=600) for t in (a, b)]
    assert [d.returncode for d in downs] == [0, 0], [d.stderr for d in downs]
    assert residue(qhome, "qsidea") == [] and residue(qhome, "qsideb") == []


@pytest.mark.netns
def test_render_logs_in_as_the_lab_user_through_the_lab_proxy(tmp_path, qhome):
    """No machine is touched: the inventory of a qemu lab uses the user and key labctl puts on the
    VMs (not the topology's ssh block) and the proxy on the gateway (no proxy: block written)."""
    from labctl.plan.model import LabModel
    from labctl.providers.qemu import machine

    t = topology(tmp_path, "qrender")
    out = tmp_path / "lab"
    labctl("render", "-t", t, "-o", out, home=qhome, check=True)
    inv = yaml.safe_load((out / "ansible-inventory.yml").read_text())
    cp = inv["all"]["children"]["kube_control_plane"]["hosts"]["qrender-cp"]
    assert cp["ansible_user"] == "labctl" and cp["ansible_become"] is True
    assert cp["ansible_ssh_private_key_file"] == str(out / "ssh" / "id_ed25519")
    proxy = inv["all"]["vars"]["kube_proxy"]
    # by name: each VM's /etc/hosts maps it to the host's address on its own LAN (here the gateway)
    assert proxy["http"] == proxy["https"] == "http://labctl-proxy:3143"
    assert f"{LAN}.11" in proxy["no_proxy"].split(",")
    assert f"IdentityFile {out / 'ssh' / 'id_ed25519'}" in (out / "ssh" / "ssh_config").read_text()
    model = LabModel.load(out / "topology-data.json")
    assert machine.lan(model, model.nodes[0]) == (24, f"{LAN}.254", f"{LAN}.254")
