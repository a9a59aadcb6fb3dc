"""No bootstrap token or CA hash in any file of the lab dir after a real-looking run (issue 11 item 11).

The control_plane and join roles run for real (not check mode) through labctl's own runner into a
rendered vm lab dir, so ansible-runner writes its artifacts (job events, stdout) where a real
`labctl up` writes them. The nodes are this host over a local connection with every path the roles
write pointed into the test's temp dir; kubeadm and kubectl are stubs that print a token and hash
the way kubeadm does (init even without --skip-token-print: the worst case), and one worker's join
fails with the token in its error, as a wrong CA pin makes it.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from test_vm_roles import STUB

from conftest import ROOT
from labctl.errors import ProvisionError
from labctl.outputs import render, runner
from labctl.plan import layout
from labctl.progress import Progress
from labctl.spec import schedule, topology

pytestmark = pytest.mark.lint

TOKEN = "abcdef.0123456789abcdef"
HASH = "sha256:" + "5f" * 32
TOKEN_RE = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
INIT_OUT = f"""[init] Using Kubernetes version: v1.34.2
[bootstrap-token] Using token: {TOKEN}
Your Kubernetes control-plane has initialized successfully!
You can now join any number of machines by running the following on each as root:

kubeadm join 10.12.22.1:6443 --token {TOKEN} \\
        --discovery-token-ca-cert-hash {HASH}
"""


def test_no_token_or_ca_hash_in_any_file_of_the_lab_dir(tmp_path, monkeypatch):
    lab = layout.LabDir(tmp_path / "lab")
    src = ROOT / "inventories" / "vm-cloud" / "topology.yml"
    render.render(schedule.plan(topology.load(src)), lab, src)

    # the nodes: this host, every path the roles write inside tmp_path
    work = tmp_path / "node"
    (work / "root-kube").mkdir(parents=True)
    admin = work / "admin.conf"
    admin.write_text("apiVersion: v1\nkind: Config\n")
    ca = work / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-subj", "/CN=kubernetes", "-days", "1"]
        + ["-keyout", str(work / "ca.key"), "-out", str(ca)],
        check=True,
        capture_output=True,
    )
    inv = yaml.safe_load(lab.inventory.read_text())
    for group in ("kube_control_plane", "kube_node"):
        for name, hv in inv["all"]["children"][group]["hosts"].items():
            for k in ("ansible_host", "ansible_user", "ansible_port", "ansible_ssh_private_key_file"):
                hv.pop(k, None)
            hv.pop("ansible_ssh_common_args", None)
            hv |= {
                "ansible_connection": "local",
                "ansible_become": False,
                "ansible_python_interpreter": "/usr/bin/python3",
                "control_plane_config_dir": str(work / "cfg"),
                "control_plane_kubeconfig": str(admin),
                "control_plane_root_kubeconfig": str(work / "root-kube" / "config"),
                "control_plane_traces": [str(work / "absent")],
                "join_kubeconfig": str(admin),
                "join_traces": [str(work / name / "kubelet.conf")],
                "join_config": str(work / name / "kubeadm-join.yaml"),
                "join_ca_cert": str(ca),
            }
    lab.inventory.write_text(yaml.safe_dump(inv))
    play = tmp_path / "play.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {"hosts": "kube_control_plane", "gather_facts": False, "roles": ["control_plane"]},
                {"hosts": "kube_node", "gather_facts": False, "roles": ["join"]},
            ]
        )
    )

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kubectl", "kubeadm"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    rules = [
        {"match": ["kubeadm version -o short"], "out": "v1.34.2\n"},
        {"match": ["kubeadm init"], "out": INIT_OUT},
        {"match": ["kubeadm token create"], "out": TOKEN + "\n"},
        {"match": ["kubeadm join", "k8s-worker-2"], "rc": 1, "err": f"error: token {TOKEN} rejected for {HASH}\n"},
        {"match": ["kubeadm join"], "out": f"[discovery] Using token {TOKEN}\nThis node has joined the cluster\n"},
        {"match": ["get node"], "rc": 1, "err": "NotFound\n"},
    ]
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    stub_log = tmp_path / "stub.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("STUB_RULES", str(tmp_path / "rules.json"))
    monkeypatch.setenv("STUB_LOG", str(stub_log))

    progress = Progress(lab.root / "logs" / "up.log", quiet=True)
    with pytest.raises(ProvisionError) as failed:
        runner.run_playbook(lab, str(play), progress)
    assert "k8s-worker-2" in str(failed.value), failed.value
    assert TOKEN not in str(failed.value) and HASH not in str(failed.value)

    # the stubs really ran: their output went through ansible
    calls = stub_log.read_text()
    assert "kubeadm init --config" in calls and "--skip-token-print" in calls
    assert "kubeadm token create" in calls and calls.count("kubeadm join --config") == 2
    assert (work / "k8s-worker-1").exists() and not (work / "k8s-worker-1" / "kubeadm-join.yaml").exists()

    events = list(lab.runner.rglob("job_events/*.json"))
    assert len(events) > 20, "ansible-runner wrote its artifacts into the lab dir"
    # the failing join is explained with the token and hash masked
    why = [e.read_text() for e in events if "kubeadm on k8s-worker-2 failed" in e.read_text()]
    assert why and "<token>" in why[0] and "sha256:<hash>" in why[0], why
    leaks = []
    for f in lab.root.rglob("*"):
        if f.is_file():
            text = f.read_text(errors="replace")
            if TOKEN in text or HASH.split(":")[1] in text or TOKEN_RE.search(text):
                leaks.append(f"{f.relative_to(lab.root)}: {(TOKEN_RE.search(text) or [TOKEN])[0]}")
    assert not leaks, leaks
