"""The vm provider's playbooks without VMs: syntax against a rendered vm inventory, and lint."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from labctl.outputs import render
from labctl.plan import layout
from labctl.spec import schedule, topology

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"

VM_TOPOLOGY = """\
name: vmt
provider: vm
network: {lan: 10.20.0.0/24}
kubernetes: {version: "1.34.2"}
calico: {version: v3.30.7, encapsulation: VXLAN, block_size: 26}
defaults:
  interface: ens3
  ssh: {user: ubuntu, key: /nonexistent/id_ed25519, jump: admin@bastion.example:2222}
nodes:
  cp-1: {role: control-plane, address: 10.20.0.10}
  wk-1: {role: worker, address: 10.20.0.11, labels: {worker: no-1}}
  wk-2: {role: worker, address: 10.20.0.12, labels: {worker: no-2}}
"""


def need(tool: str) -> str:
    # conftest puts the venv's bin dir on PATH; `make venv` installs these, so missing one is a broken setup
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (make venv installs ansible-core ansible-lint yamllint)")
    return path


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory) -> layout.LabDir:
    tmp = tmp_path_factory.mktemp("vm")
    src = tmp / "topology.yml"
    src.write_text(VM_TOPOLOGY)
    lab = layout.LabDir(tmp / "lab")
    render.render(schedule.plan(topology.load(src)), lab, src)
    return lab


@pytest.mark.unit
def test_rendered_vm_inventory_has_what_the_roles_use(vm_lab):
    text = vm_lab.inventory.read_text()
    for key in ("ansible_become", "ansible_ssh_common_args", "node_labels", "calico_encapsulation", "lab_dir"):
        assert key in text
    for node in ("wk-1", "wk-2"):
        join = vm_lab.kubeadm_join(node).read_text()
        assert "{{ kubeadm_join_token }}" in join and "{{ kubeadm_ca_cert_hash }}" in join


@pytest.mark.lint
@pytest.mark.parametrize("playbook", ["vm-up.yml", "vm-down.yml"])
def test_syntax(vm_lab, playbook):
    exe = need("ansible-playbook")
    env = dict(os.environ, ANSIBLE_CONFIG=str(vm_lab.ansible_cfg), ANSIBLE_NOCOLOR="1")
    p = subprocess.run(
        [exe, "--syntax-check", "-i", str(vm_lab.inventory), str(PLAYBOOKS / playbook)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.lint
def test_ansible_lint_production():
    exe = need("ansible-lint")
    p = subprocess.run(
        [exe, "--profile", "production", "--nocolor", "playbooks/"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=dict(os.environ, NO_COLOR="1", ANSIBLE_NOCOLOR="1"),
    )
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.lint
def test_yamllint():
    exe = need("yamllint")
    p = subprocess.run([exe, "-s", "playbooks/"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.lint
def test_yamllint_sample_topologies():
    """`make lint` checks the samples too; their own config only allows aligned colons."""
    exe = need("yamllint")
    cmd = [exe, "-s", "-c", "inventories/.yamllint", "inventories/"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.unit
def test_every_task_touching_join_secrets_is_no_log():
    """Join tokens and the CA hash must never reach output, logs or ansible-runner's artifacts:
    every task that names them hides its result. Allowed without no_log: modules that only see a
    path (stat, file), and the one `fail` that shows kubeadm's error with tokens masked."""
    import yaml as _yaml

    secret = ("join_token", "kubeadm_join_token", "join_ca_hash", "kubeadm_ca_cert_hash", "join_config")
    path_only = {"ansible.builtin.stat", "ansible.builtin.file"}

    def tasks(items):
        for t in items or []:
            if any(k in t for k in ("block", "rescue", "always")):
                for key in ("block", "rescue", "always"):
                    yield from tasks(t.get(key))
            else:
                yield t

    seen = 0
    for path in (ROOT / "playbooks" / "roles").glob("*/tasks/*.yml"):
        for t in tasks(_yaml.safe_load(path.read_text())):
            text = _yaml.safe_dump({k: v for k, v in t.items() if k != "name"})
            # commands whose output holds a token or the CA hash: kubeadm init prints both
            run = str(t.get("ansible.builtin.command", "")) + str(t.get("ansible.builtin.shell", ""))
            prints = re.search(r"kubeadm (init|join|token)\b", run)
            if prints:
                assert t.get("no_log") is True, f"{path.relative_to(ROOT)}: {t.get('name')!r} prints a token"
            if not any(s in text for s in secret) and not prints:
                continue
            seen += 1
            module = next((k for k in t if k.startswith("ansible.builtin.")), "")
            masked = module == "ansible.builtin.fail" and "<token>" in text
            assert t.get("no_log") is True or module in path_only or masked, (
                f"{path.relative_to(ROOT)}: task {t.get('name')!r} handles join secrets without no_log"
            )
    assert seen >= 5  # the init, the token, the CA hash, the filled config, the join itself


def _validate(lab: layout.LabDir, inventory: Path) -> subprocess.CompletedProcess:
    play = inventory.parent / "validate.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  roles: [validate_inventory]\n")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(lab.ansible_cfg),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_ROLES_PATH=str(PLAYBOOKS / "roles"),
    )
    return subprocess.run(
        [need("ansible-playbook"), "-i", str(inventory), str(play)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.lint
def test_validate_inventory_names_a_hand_broken_node(vm_lab, tmp_path):
    import yaml

    assert _validate(vm_lab, vm_lab.inventory).returncode == 0
    inv = yaml.safe_load(vm_lab.inventory.read_text())
    hosts = inv["all"]["children"]["kube_node"]["hosts"]
    del hosts["wk-1"]["node_block"]
    hosts["wk-2"]["node_labels"] = {"worker": 2}
    broken = tmp_path / "inventory.yml"
    broken.write_text(yaml.safe_dump(inv))
    p = _validate(vm_lab, broken)
    assert p.returncode != 0
    assert "wk-1 lacks node_block;" in p.stdout, p.stdout
    assert "wk-2: node_labels must map strings to strings;" in p.stdout, p.stdout
    assert "cp-1" not in p.stdout.split("bad inventory:")[-1]


@pytest.mark.lint
def test_down_resets_the_nodes_that_answer_and_names_the_others(vm_lab, tmp_path):
    """Issue 11 item 14: one unreachable node must not stop `down` for the others. cp-1 is this
    host over a local connection, in check mode (nothing changes); wk-1 and wk-2 point at a
    closed loopback port."""
    import yaml

    inv = yaml.safe_load(vm_lab.inventory.read_text())
    cp = inv["all"]["children"]["kube_control_plane"]["hosts"]["cp-1"]
    cp.update(ansible_connection="local", ansible_become=False, ansible_python_interpreter="/usr/bin/python3")
    for hv in inv["all"]["children"]["kube_node"]["hosts"].values():
        hv.pop("ansible_ssh_common_args", None)  # no jump host: straight to a port that refuses
        hv.update(ansible_host="127.0.0.1", ansible_port=9)
    broken = tmp_path / "inventory.yml"
    broken.write_text(yaml.safe_dump(inv))
    env = dict(os.environ, ANSIBLE_CONFIG=str(vm_lab.ansible_cfg), ANSIBLE_NOCOLOR="1")
    p = subprocess.run(
        [need("ansible-playbook"), "--check", "-i", str(broken), "-e", "reset_connect_timeout=5"]
        + [str(PLAYBOOKS / "vm-down.yml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "not reset: wk-1, wk-2 (unreachable: wk-1, wk-2)" in out, out
    # the reachable node went through the whole reset
    assert re.search(r"TASK \[reset : Reset done\][^\n]*\n(ok|changed): \[cp-1\]", out), out
    assert re.search(r"cp-1\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", out), out


@pytest.mark.lint
def test_down_through_labctl_names_the_unreachable_nodes_not_the_first_contact(vm_lab, tmp_path):
    """vm-down.yml tries each node once with raw (ignore_unreachable) before waiting for it: that
    ignored unreachable must not become the error `labctl down` prints; the last play's is it."""
    import shutil as sh

    import yaml

    from labctl.errors import ProvisionError
    from labctl.outputs import runner
    from labctl.plan import layout
    from labctl.progress import Progress

    lab = layout.LabDir(tmp_path / "lab")
    sh.copytree(vm_lab.root, lab.root)
    inv = yaml.safe_load(lab.inventory.read_text())
    for group in ("kube_control_plane", "kube_node"):
        for hv in inv["all"]["children"][group]["hosts"].values():
            hv.pop("ansible_ssh_common_args", None)
            hv.update(ansible_host="127.0.0.1", ansible_port=9)
    lab.inventory.write_text(yaml.safe_dump(inv))
    progress = Progress(lab.root / "logs" / "down.log", quiet=True)
    with pytest.raises(ProvisionError) as e:
        runner.run_playbook(lab, "vm-down.yml", progress, extravars={"reset_connect_timeout": 3}, check=True)
    assert "not reset: cp-1, wk-1, wk-2 (unreachable: cp-1, wk-1, wk-2)" in str(e.value), str(e.value)


@pytest.mark.unit
def test_reset_undoes_what_host_prep_and_containerd_wrote():
    import yaml

    host_prep = yaml.safe_load((ROOT / "playbooks/roles/host_prep/defaults/main.yml").read_text())
    reset = yaml.safe_load((ROOT / "playbooks/roles/reset/defaults/main.yml").read_text())
    assert reset["reset_fstab_mark"] == host_prep["host_prep_fstab_mark"]
    for path in (
        "/etc/containerd",
        "/etc/crictl.yaml",
        "/etc/sysctl.d/99-labctl-k8s.conf",
        "/etc/modules-load.d/labctl-k8s.conf",
        "/etc/apt/apt.conf.d/95labctl-proxy",
        "/etc/systemd/system/containerd.service.d/http-proxy.conf",
    ):
        assert path in reset["reset_host_files"], path
    # every file host_prep and containerd write under /etc is in that list (or in the purge list)
    written = set()
    for role in ("host_prep", "containerd"):
        text = (ROOT / "playbooks/roles" / role / "tasks/main.yml").read_text()
        written |= set(re.findall(r"dest: (/etc/[^\s\"{]+)", text))
    removed = reset["reset_host_files"] + reset["reset_purge_files"]
    missing = [w for w in written if not any(w == r or w.startswith(r + "/") for r in removed)]
    assert not missing, missing
    # the role's one script: swap lines host_prep marked, and its /etc/hosts block (blockinfile's markers)
    script = (ROOT / "playbooks/roles/reset/templates/reset.sh.j2").read_text()
    assert "mark={{ reset_fstab_mark | quote }}" in script
    host_prep_tasks = (ROOT / "playbooks/roles/host_prep/tasks/main.yml").read_text()
    assert 'marker: "# {mark} labctl lab {{ lab_name }}"' in host_prep_tasks
    assert "('# BEGIN labctl lab ' ~ lab_name)" in script and "('# END labctl lab ' ~ lab_name)" in script
