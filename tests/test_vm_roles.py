"""The vm roles' decisions, run by ansible on this host without touching it.

Each test runs one role against `localhost` (local connection) in check mode, with `kubectl` and
`kubeadm` replaced by stubs that answer like a cluster in a given state, and reads what the role
would do from ansible's verbose output: a command that would run shows
"Command would have run if not in check mode" with its argv, one the role decided against shows
"Conditional result was False". The containerd role reads this host's real apt state (Debian 12,
containerd 1.6.20 in the mirror). Nothing here connects anywhere but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from labctl.outputs import render
from labctl.plan import layout
from labctl.spec import schedule, topology

ROLES = ROOT / "playbooks" / "roles"
PYTHON = "/usr/bin/python3"
WOULD_RUN = "Command would have run if not in check mode"
DECIDED_NOT = "Conditional result was False"

STUB = """#!/usr/bin/env python3
import json, os, sys
me = os.path.basename(sys.argv[0])
line = " ".join([me] + sys.argv[1:])
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(line + "\\n")
for rule in json.load(open(os.environ["STUB_RULES"])):
    if all(part in line for part in rule["match"]):
        sys.stdout.write(rule.get("out", ""))
        sys.stderr.write(rule.get("err", ""))
        sys.exit(rule.get("rc", 0))
sys.exit(0)
"""


def stubs(tmp_path: Path, rules: list[dict]) -> dict:
    """Env that puts kubectl/kubeadm stubs first on PATH, answering by the first matching rule."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("kubectl", "kubeadm"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_RULES": str(tmp_path / "rules.json"),
        "STUB_LOG": str(tmp_path / "stub.log"),
    }


def run_role(tmp_path: Path, role: str, hosts: dict, extravars: dict, rules=(), check=True, play_hosts=None):
    """hosts: {name: {group, vars}}. Returns (rc, {task name: its output}, full output)."""
    exe = shutil.which("ansible-playbook")
    assert exe, "ansible-playbook is installed by `make deps`"
    groups: dict = {"kube_control_plane": {"hosts": {}}, "kube_node": {"hosts": {}}}
    for name, h in hosts.items():
        groups[h["group"]]["hosts"][name] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": PYTHON,
            **h.get("vars", {}),
        }
    inv = {"all": {"children": {"k8s_cluster": {"children": groups}}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inv))
    play = [{"hosts": play_hosts or "k8s_cluster", "gather_facts": False, "roles": [role]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    (tmp_path / "extra.json").write_text(json.dumps(extravars))
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\n")  # none of the user's or this directory's settings
    env = dict(
        os.environ,
        ANSIBLE_ROLES_PATH=str(ROLES),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        ANSIBLE_CONFIG=str(cfg),
        ANSIBLE_RETRY_FILES_ENABLED="0",
        **stubs(tmp_path, list(rules)),
    )
    cmd = [exe, "-v", "-i", str(tmp_path / "inventory.yml"), "-e", f"@{tmp_path / 'extra.json'}"]
    cmd += ["--check", "--diff"] if check else []
    p = subprocess.run(cmd + [str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, timeout=300)
    tasks: dict[str, str] = {}
    for block in re.split(r"^(?=TASK \[|RUNNING HANDLER \[)", p.stdout, flags=re.M):
        m = re.match(r"(?:TASK|RUNNING HANDLER) \[(?:[^\]]* : )?([^\]]*)\]", block)
        if m:
            tasks[m.group(1)] = tasks.get(m.group(1), "") + block
    return p.returncode, tasks, p.stdout + p.stderr


def host_part(task_text: str, host: str) -> str:
    """The lines of one task's output that belong to one host: its result line and the diff
    printed just before it."""
    chunks = re.split(r"(?<=\n)(?=\S)", task_text)
    out, pending = [], ""
    for c in chunks:
        m = re.match(r"(ok|changed|skipping|fatal|failed|included): \[([^\]]+)\]", c)
        if m:
            if m.group(2) == host or m.group(2).startswith(host + " ->"):
                out.append(pending + c)
            pending = ""
        elif not c.startswith(("TASK", "RUNNING HANDLER")):
            pending += c
    return "".join(out)


def _facts(task_text: str, host: str) -> dict:
    """The facts a set_fact task set on one host, as ansible reported them."""
    line = host_part(task_text, host).strip().splitlines()[-1]
    return json.loads(line.split("=> ", 1)[1])["ansible_facts"]


# ---------------------------------------------------------------------------------------------
# workloads (issue 11 item 10)
# ---------------------------------------------------------------------------------------------
def _pods(*pods):
    return json.dumps(
        {"items": [{"metadata": {"name": n}, "spec": {"nodeSelector": sel} if sel else {}} for n, sel in pods]}
    )


@pytest.mark.lint
def test_workloads_recreates_moved_pods_prunes_removed_ones_and_applies_nothing_empty(tmp_path):
    """Two control planes of two labs: `moved` changed pod-b's nodeSelector and dropped `old`;
    `empty` has `workloads: []`."""
    rules = [
        {
            "match": ["moved.conf", "get pods"],
            "out": _pods(
                ("labctl-pod-a", {"worker": "no-1"}),  # unchanged
                ("labctl-pod-b", {"worker": "no-1"}),  # moved to no-2 in the topology
                ("labctl-old", {"worker": "no-2"}),  # gone from the topology
            ),
        },
        {"match": ["empty.conf", "get pods"], "out": _pods(("labctl-pod-a", {"worker": "no-1"}))},
    ]
    workloads = [
        {"name": "pod-a", "node": "w1", "node_selector": {"worker": "no-1"}},
        {"name": "pod-b", "node": "w2", "node_selector": {"worker": "no-2"}},
    ]
    hosts = {
        "moved": {
            "group": "kube_control_plane",
            "vars": {"lab_workloads": workloads, "workloads_kubeconfig": "moved.conf"},
        },
        "empty": {"group": "kube_control_plane", "vars": {"lab_workloads": [], "workloads_kubeconfig": "empty.conf"}},
    }
    rc, tasks, out = run_role(tmp_path, "workloads", hosts, {}, rules)
    assert rc == 0, out
    delete = host_part(tasks["Delete pods that are gone from the topology or must move"], "moved")
    assert WOULD_RUN in delete, delete
    argv = json.loads(delete.split("=> ", 1)[1])["cmd"]
    assert argv[-2:] == ["labctl-pod-b", "labctl-old"], argv
    assert "labctl-pod-a" not in argv
    assert WOULD_RUN in host_part(tasks["Workloads applied"], "moved")
    # workloads: [] -> no apply of an empty file, and the pod labctl made before goes
    assert DECIDED_NOT in host_part(tasks["Workloads applied"], "empty")
    assert "labctl-pod-a" in host_part(tasks["Delete pods that are gone from the topology or must move"], "empty")


@pytest.mark.unit
def test_workload_pods_carry_the_managed_by_label(tmp_path):
    text = (ROLES / "workloads" / "templates" / "pods.yaml.j2").read_text()
    assert "app.kubernetes.io/managed-by: labctl" in text and "labctl.io/workload:" in text


# ---------------------------------------------------------------------------------------------
# control_plane (items 9, 11, 12)
# ---------------------------------------------------------------------------------------------
INIT_TEMPLATE = (ROOT / "tests" / "golden" / "vm-cloud" / "kubeadm" / "init.yaml").resolve()


def _cp_host(tmp_path: Path, name: str, admin_conf: bool, pending: bool = False) -> dict:
    d = tmp_path / name
    (d / "root-kube").mkdir(parents=True)  # check mode does not create it for the copy that follows
    (d / "cfg").mkdir()
    if pending:  # labctl's own kubeadm init started here and never finished
        (d / "cfg" / "init-pending").write_text("")
    admin = d / "admin.conf"
    if admin_conf:
        admin.write_text("apiVersion: v1\nkind: Config\n")
    (d / "lab-kubeconfig").write_text("")
    return {
        "group": "kube_control_plane",
        "vars": {
            "node_address": "127.0.0.1",
            "lab_kubeconfig": str(d / "lab-kubeconfig"),
            "control_plane_config_dir": str(d / "cfg"),
            "control_plane_kubeconfig": str(admin if admin_conf else tmp_path / "fresh-admin.conf"),
            "control_plane_root_kubeconfig": str(d / "root-kube" / "config"),
            "control_plane_traces": [str(admin)],
        },
    }


@pytest.mark.lint
def test_control_plane_decides_init_from_the_cluster(tmp_path):
    """half: labctl's own init started (its marker) and the API never came up -> reset, init.
    held (issue 21 item 4): admin.conf, no marker, the API does not answer (a reboot, a slow start)
    -> no reset: the role fails saying what to do. asked: the same, but the user asked for the reset.
    done: the cluster answers with kubeadm-config -> nothing. fresh: no traces -> init, no reset."""
    (tmp_path / "fresh-admin.conf").write_text("")  # what init would have written, for the tasks after it
    names = ("half", "held", "asked", "done", "fresh")
    hosts = {n: _cp_host(tmp_path, n, admin_conf=n != "fresh", pending=n == "half") for n in names}
    hosts["asked"]["vars"]["control_plane_reset"] = True
    rules = [
        {"match": ["kubeadm version -o short"], "out": "v1.34.2\n"},
        {"match": ["done/admin.conf", "get configmap kubeadm-config"], "out": "configmap/kubeadm-config\n"},
        {"match": ["/admin.conf", "get configmap kubeadm-config"], "rc": 1, "err": "connection refused"},
    ]
    extravars = {
        "lab_kubeadm_init": str(INIT_TEMPLATE),
        "kube_version": "1.34",
        "control_plane_restart_wait": 1,
        "control_plane_state_delay": 0,
    }
    rc, tasks, out = run_role(tmp_path, "control_plane", hosts, extravars, rules)
    assert rc != 0, out  # the held one fails
    undo, init = tasks["Undo the init that failed halfway"], tasks["Kubeadm init"]
    for h in ("half", "asked"):
        assert WOULD_RUN in host_part(undo, h) and '"kubeadm", "reset", "-f"' in host_part(undo, h)
    assert DECIDED_NOT in host_part(undo, "fresh")
    assert host_part(undo, "held") == ""  # it never got there
    refused = host_part(tasks["Never reset a control plane that holds a cluster unasked"], "held")
    assert "fatal: [held]" in refused and "holds a Kubernetes control plane" in refused, refused
    assert "does not run `kubeadm reset` on it by itself" in refused and "control_plane_reset=true" in refused
    assert "held" not in [line.split()[-1] for line in open(tmp_path / "stub.log") if "kubeadm reset" in line]
    for h in ("half", "fresh"):
        part = host_part(init, h)
        assert "censored" in part, part  # no_log: its output holds the bootstrap token
        assert "kubeadm init" not in part  # not even the command line shows
    # no_log censors why a task was skipped too: read the decision the init block is conditioned on
    facts = {h: _facts(tasks["Remember the decision"], h) for h in hosts}
    assert facts["done"]["control_plane_initialised"] is True
    assert facts["half"] == {
        "control_plane_initialised": False,
        "control_plane_half_built": True,
        "control_plane_held": False,
    }
    assert facts["held"] == {
        "control_plane_initialised": False,
        "control_plane_half_built": False,
        "control_plane_held": True,
    }
    assert facts["fresh"] == {
        "control_plane_initialised": False,
        "control_plane_half_built": False,
        "control_plane_held": False,
    }
    # the marker: written before init, removed after it
    assert "init-pending" in host_part(tasks["Mark the init as unfinished"], "fresh")
    # item 12: the installed kubeadm's version, not stable-1.34
    fill = host_part(tasks["Fill the rendered InitConfiguration with that version"], "half")
    assert 'kubernetesVersion: "v1.34.2"' in fill, fill
    assert "stable-" not in fill


@pytest.mark.unit
def test_kubeadm_init_skips_the_token_print():
    tasks = yaml.safe_load((ROLES / "control_plane" / "tasks" / "main.yml").read_text())
    block = next(t for t in tasks if t.get("name") == "Kubeadm init")
    init = next(t for t in block["block"] if "kubeadm init" in str(t.get("ansible.builtin.command", "")))
    assert "--skip-token-print" in init["ansible.builtin.command"]
    assert init["no_log"] is True
    assert "creates" not in str(init)  # decided from the cluster, not from admin.conf


# ---------------------------------------------------------------------------------------------
# join (item 9)
# ---------------------------------------------------------------------------------------------
@pytest.mark.lint
def test_join_decides_from_the_cluster(tmp_path):
    """stray: kubelet.conf but the cluster has no such node -> reset, join. reinstalled: no
    kubelet.conf but a node object of that name -> delete it, join. joined: both -> nothing.
    apidown: the API server does not answer -> stop, never reset."""
    hosts = {"k8s-master": {"group": "kube_control_plane"}}
    for name, conf in (("stray", True), ("reinstalled", False), ("joined", True), ("apidown", True)):
        d = tmp_path / name
        d.mkdir()
        if conf:
            (d / "kubelet.conf").write_text("x")
        hosts[name] = {
            "group": "kube_node",
            "vars": {
                "node_name": name,
                "node_kubeadm_join": str(ROOT / "tests/golden/vm-cloud/kubeadm/join-k8s-worker-1.yaml"),
                "join_traces": [str(d / "kubelet.conf"), str(d / "absent")],
                "join_config": str(d / "join" / "kubeadm-join.yaml"),
                "join_ca_cert": str(d / "ca.crt"),
            },
        }
    rules = [
        {"match": ["get node stray"], "rc": 1, "err": 'nodes "stray" not found'},
        {"match": ["get node reinstalled"], "out": "node/reinstalled\n"},
        {"match": ["get node joined"], "out": "node/joined\n"},
        {"match": ["get node apidown"], "rc": 1, "err": "The connection to the server was refused\n"},
    ]
    rc, tasks, out = run_role(tmp_path, "join", hosts, {}, rules, play_hosts="kube_node")
    # apidown: no answer is no proof of anything; it stops there instead of resetting a worker
    assert "cannot tell whether apidown has joined" in host_part(tasks["The control plane answered"], "apidown")
    assert re.search(r"apidown\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=1", out), out
    for h in ("stray", "reinstalled", "joined"):
        assert re.search(h + r"\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", out), out
    undo, stale, join = (
        tasks["Undo the join that failed halfway"],
        tasks["Remove a stale node object"],
        tasks["Kubeadm join"],
    )
    assert WOULD_RUN in host_part(undo, "stray") and DECIDED_NOT in host_part(stale, "stray")
    assert WOULD_RUN in host_part(stale, "reinstalled") and DECIDED_NOT in host_part(undo, "reinstalled")
    joined = {h: _facts(tasks["Has this worker joined"], h)["join_joined"] for h in ("stray", "reinstalled", "joined")}
    assert joined == {"stray": False, "reinstalled": False, "joined": True}
    for h in ("stray", "reinstalled"):
        assert "censored" in host_part(join, h)


# ---------------------------------------------------------------------------------------------
# calico_bgp (item 14)
# ---------------------------------------------------------------------------------------------
@pytest.mark.lint
def test_reflectors_off_turns_the_mesh_back_on(tmp_path):
    rules = [
        {"match": ["get bgpconfiguration"], "out": "false"},
        {"match": ["get node.projectcalico.org"], "out": "k8s-master=244.0.0.1=\nk8s-worker-1==\n"},
    ]
    hosts = {"k8s-master": {"group": "kube_control_plane"}, "k8s-worker-1": {"group": "kube_node"}}
    extravars = {"calico_route_reflectors": [], "calico_rr_cluster_id": "244.0.0.1", "lab_calico_bgp": "/nonexistent"}
    rc, tasks, out = run_role(tmp_path, "calico_bgp", hosts, extravars, rules, play_hosts="kube_control_plane")
    assert rc == 0, out
    assert WOULD_RUN in tasks["Mesh back on"] and 'nodeToNodeMeshEnabled\\": true' in tasks["Mesh back on"]
    assert (
        WOULD_RUN in tasks["No peering with reflectors"]
        and "peer-with-route-reflectors" in tasks["No peering with reflectors"]
    )
    former = tasks["Nodes that are no reflectors any more"]
    assert "k8s-master" in former and WOULD_RUN in former
    assert DECIDED_NOT in tasks["Mesh off, peer with the reflectors or each rack's router"]
    assert WOULD_RUN not in tasks["Nodes without their own AS any more"]  # none has one


def _two_racks_vm(tmp_path: Path) -> layout.LabDir:
    src = ROOT / "inventories" / "two-racks-vm" / "topology.yml"
    lab = layout.LabDir(tmp_path / "lab")
    render.render(schedule.plan(topology.load(src)), lab, src)
    return lab


@pytest.mark.lint
def test_tor_sets_each_nodes_as_applies_the_rack_peers_and_drops_a_gone_one(tmp_path):
    lab = _two_racks_vm(tmp_path)
    rules = [
        {"match": ["get bgppeer.projectcalico.org"], "out": "tor-rack-a tor-rack-old"},
        {"match": ["get node.projectcalico.org"], "out": "k8s-master==\nk8s-worker-1==65001\n"},
    ]
    hosts = {"k8s-master": {"group": "kube_control_plane"}, "k8s-worker-1": {"group": "kube_node"}}
    extravars = {
        "calico_route_reflectors": [],
        "calico_rr_cluster_id": "244.0.0.1",
        "calico_bgp": "tor",
        "lab_calico_bgp": str(lab.calico_bgp),
        "lab_calico_nodes": str(lab.calico_nodes),
    }
    rc, tasks, out = run_role(tmp_path, "calico_bgp", hosts, extravars, rules, play_hosts="kube_control_plane")
    assert rc == 0, out
    asn = tasks["Each node in its network's AS"]
    assert asn.count(WOULD_RUN) == 3
    for node, want in (("k8s-master", 65001), ("k8s-worker-1", 65001), ("k8s-worker-2", 65002)):
        assert re.search(
            rf'"{node}",\s*"--type",\s*"merge",\s*"-p",\s*"{{\\"spec\\": {{\\"bgp\\": {{\\"asNumber\\": {want}}}', asn
        ), node
    assert WOULD_RUN in tasks["Mesh off, peer with the reflectors or each rack's router"]
    assert "Mesh back on" not in tasks or WOULD_RUN not in tasks["Mesh back on"]
    gone = tasks["No peering with former ToR routers"]
    assert "tor-rack-old" in gone and WOULD_RUN in gone and "tor-rack-a " not in gone
    assert DECIDED_NOT in tasks["Nodes without their own AS any more"]


@pytest.mark.lint
def test_mesh_after_tor_gives_the_nodes_back_the_cluster_as_and_drops_the_rack_peers(tmp_path):
    rules = [
        {"match": ["get bgpconfiguration"], "out": "false"},
        {"match": ["get bgppeer.projectcalico.org"], "out": "tor-rack-a tor-rack-b"},
        {"match": ["get node.projectcalico.org"], "out": "k8s-master==65001\nk8s-worker-1==\n"},
    ]
    hosts = {"k8s-master": {"group": "kube_control_plane"}, "k8s-worker-1": {"group": "kube_node"}}
    extravars = {"calico_route_reflectors": [], "calico_rr_cluster_id": "244.0.0.1", "calico_bgp": "mesh"}
    extravars["lab_calico_bgp"] = "/nonexistent"
    rc, tasks, out = run_role(tmp_path, "calico_bgp", hosts, extravars, rules, play_hosts="kube_control_plane")
    assert rc == 0, out
    assert WOULD_RUN in tasks["Mesh back on"]
    gone = tasks["No peering with former ToR routers"]
    assert gone.count(WOULD_RUN) == 2 and "tor-rack-b" in gone
    back = tasks["Nodes without their own AS any more"]
    assert back.count(WOULD_RUN) == 1 and "k8s-master" in back and '\\"asNumber\\": null' in back


@pytest.mark.unit
def test_calico_bgp_runs_after_the_labels_and_always():
    plays = yaml.safe_load((ROOT / "playbooks" / "vm-up.yml").read_text())
    names = [p["name"] for p in plays]
    labels = next(i for i, p in enumerate(plays) if p.get("roles") == ["node_labels"])
    bgp = next(i for i, p in enumerate(plays) if "calico_bgp" in str(p.get("roles")))
    assert labels < bgp, names
    assert plays[bgp]["roles"] == ["calico_bgp"]  # no `when`: reflectors off must run it too


# ---------------------------------------------------------------------------------------------
# containerd (items 5, 7, 13) on this host's real apt, check mode
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def no_containerd_here():
    if shutil.which("containerd") or Path("/etc/containerd").exists():
        pytest.fail("this test expects a host without containerd (it checks that check mode changes nothing)")
    yield
    assert not Path("/etc/containerd").exists() and not Path("/etc/crictl.yaml").exists()


@pytest.mark.lint
def test_containerd_source_choice_in_check_mode(tmp_path, no_containerd_here):
    """On this Debian 12 host (distro containerd 1.6.20), four nodes:
    distro: forced distro for 1.34 -> completes in check mode (item 5), warns, holds, pause 3.10.1;
    k133: distro for 1.33 -> pause 3.10; auto: 1.6.20 is below 1.6.39 -> upstream, whose host
    does not answer -> a message naming it; newenough: a table in which 1.6.20 suffices -> distro."""
    hosts = {
        "distro": {"vars": {"containerd_source": "distro"}},
        "k133": {"vars": {"containerd_source": "distro", "kube_version": "1.33"}},
        "auto": {"vars": {}},
        "newenough": {"vars": {"containerd_supported": {"1.34": ["2.1.0", "1.6.20"]}}},
    }
    for h in hosts.values():
        h["group"] = "kube_node"
    extravars = {
        "lan_cidr": "10.20.0.0/24",
        "kube_pod_subnet": "192.168.0.0/16",
        "kube_service_subnet": "10.96.0.0/12",
        # nothing but loopback: port 9 refuses, as an unreachable github.com would
        "containerd_upstream_url": "http://127.0.0.1:9/containerd-2.1.5-linux-amd64.tar.gz",
        "containerd_runc_url": "http://127.0.0.1:9/runc.amd64",
    }
    for h in hosts.values():
        h["vars"].setdefault("kube_version", "1.34")
    rc, tasks, out = run_role(tmp_path, "containerd", hosts, extravars)
    assert rc != 0  # the auto node fails, the others run to the end
    assert "distro                     : ok=" in out and "failed=0" in out.split("distro                     :")[1]
    warn = host_part(tasks["The distro containerd is below what Kubernetes needs"], "distro")
    assert "containerd 1.6.20" in warn and "1.6.39+" in warn and "1.7.28+" in warn, warn
    hold = yaml.safe_load((ROLES / "containerd" / "tasks" / "main.yml").read_text())
    hold = [t for b in hold if "block" in b for t in b["block"] if "ansible.builtin.dpkg_selections" in t]
    assert hold and hold[0]["ansible.builtin.dpkg_selections"]["selection"] == "hold"
    raw = [b for b in yaml.safe_load((ROLES / "containerd" / "tasks" / "main.yml").read_text()) if "block" in b]
    raw = [t for b in raw for t in b["block"] if t["name"].startswith("Install the distro containerd and hold")]
    assert "hold | dpkg --set-selections" in raw[0]["vars"]["containerd_apt_command"]  # a real run holds it too
    config = tasks["Configuration (schema version 2 for 1.x, 3 for 2.x)"]
    c134, c133 = host_part(config, "distro"), host_part(config, "k133")
    assert "registry.k8s.io/pause:3.10.1" in c134, c134
    assert "registry.k8s.io/pause:3.10" in c133 and "pause:3.10.1" not in c133, c133
    assert 'config_path = "/etc/containerd/certs.d"' in c134
    assert "SystemdCgroup = true" in c134
    why = host_part(tasks["Why the upstream containerd could not be installed"], "auto")
    assert "containerd 1.6.20" in why and "too old for Kubernetes 1.34" in why, why
    assert "Is 127.0.0.1 reachable from auto" in why, why
    assert "containerd_source=distro" in why
    assert DECIDED_NOT in host_part(tasks["Install the distro containerd (check mode)"], "auto")
    assert DECIDED_NOT in host_part(tasks["Download the containerd release"], "newenough")
    assert DECIDED_NOT not in host_part(tasks["Install the distro containerd (check mode)"], "newenough")


# ---------------------------------------------------------------------------------------------
# host_prep (items 1, 8) and static checks of every role (items 4, 8, 15)
# ---------------------------------------------------------------------------------------------
def _all_tasks():
    def walk(items, inherited_env=None):
        for t in items or []:
            env = t.get("environment", inherited_env)
            if any(k in t for k in ("block", "rescue", "always")):
                for key in ("block", "rescue", "always"):
                    yield from walk(t.get(key), env)
            else:
                yield t, env

    for path in sorted(ROLES.glob("*/tasks/*.yml")) + sorted(ROLES.glob("*/handlers/*.yml")):
        for t, env in walk(yaml.safe_load(path.read_text())):
            yield path.relative_to(ROOT), t, env


@pytest.mark.unit
def test_every_download_goes_through_the_lab_proxy():
    seen = 0
    for path, t, env in _all_tasks():
        if "ansible.builtin.get_url" in t:
            seen += 1
            assert env and "proxy_env" in str(env), f"{path}: {t['name']} ignores the lab proxy"
    assert seen >= 4  # Release.key, Calico manifests, containerd, runc


@pytest.mark.unit
def test_no_kubectl_fetches_from_the_internet_and_calico_applies_server_side():
    for path, t, _ in _all_tasks():
        cmd = str(t.get("ansible.builtin.command", "")) + str(t.get("ansible.builtin.shell", ""))
        assert "https://" not in cmd, f"{path}: {t['name']} fetches with kubectl/curl, not get_url"
        assert not re.search(r"kubectl\b.*\bcreate -f", cmd), f"{path}: {t['name']}: create is not idempotent"
    calico = (ROLES / "calico" / "tasks" / "main.yml").read_text()
    assert calico.count("--server-side") == 2 and "--force-conflicts" in calico


@pytest.mark.unit
def test_every_apt_task_waits_for_the_dpkg_lock():
    seen = 0
    for path, t, _ in _all_tasks():
        apt = t.get("ansible.builtin.apt")
        if apt and apt.get("state") != "absent":
            seen += 1
            assert "lock_timeout" in apt, f"{path}: {t['name']} fails on a first boot's dpkg lock"
    assert seen >= 5


@pytest.mark.unit
def test_host_prep_waits_for_cloud_init_and_names_the_host_before_apt():
    tasks = yaml.safe_load((ROLES / "host_prep" / "tasks" / "main.yml").read_text())
    names = [t["name"] for t in tasks]
    # the probe that runs first waits for cloud-init before it reads anything
    wait = names.index("Wait for cloud-init to finish, then read what host_prep changes")
    assert wait == 0 and "probe.sh.j2" in tasks[wait]["ansible.builtin.raw"]
    probe = (ROLES / "host_prep" / "templates" / "probe.sh.j2").read_text()
    assert probe.index("cloud-init status --wait") < probe.index("echo cloud_init=yes")
    hostname = names.index("Hostname is the node name")
    assert tasks[hostname]["ansible.builtin.hostname"]["name"] == "{{ node_name }}"
    hosts = names.index("Every node's name in /etc/hosts (check mode)")
    assert tasks[hosts]["ansible.builtin.blockinfile"]["block"] == "{{ host_prep_hosts }}"
    # a real run writes the same section (the probe compares it with host_prep_hosts_block)
    raw = tasks[names.index("Every node's name in /etc/hosts")]["ansible.builtin.raw"]
    assert "{{ host_prep_hosts_block | trim }}" in raw and 'cat "$t" > /etc/hosts' in raw
    assert "node_address" in (ROLES / "host_prep" / "vars" / "main.yml").read_text()
    assert wait < hostname and wait < names.index("Apt through the lab proxy")


@pytest.mark.lint
def test_host_prep_sets_hostname_and_hosts_in_check_mode(tmp_path):
    hosts = {
        "k8s-master": {
            "group": "kube_control_plane",
            "vars": {"node_name": "k8s-master", "node_address": "10.20.0.10"},
        },
        "k8s-worker-1": {"group": "kube_node", "vars": {"node_name": "k8s-worker-1", "node_address": "10.20.0.11"}},
    }
    extravars = {"calico_encapsulation": "IPIP", "lab_name": "vmroles"}
    rc, tasks, out = run_role(tmp_path, "host_prep", hosts, extravars)
    assert rc == 0, out
    hosts_diff = tasks["Every node's name in /etc/hosts (check mode)"]
    assert "+10.20.0.10 k8s-master" in hosts_diff and "+10.20.0.11 k8s-worker-1" in hosts_diff, hosts_diff
    assert "k8s-worker-1" in tasks["Hostname is the node name"]
    assert "labctl lab vmroles" not in Path("/etc/hosts").read_text()  # check mode changed nothing
