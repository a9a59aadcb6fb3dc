"""The vm roles' decisions of issue 21 (items 7, 9, 10), run by ansible on this host in check mode
with stub kubectl/kubeadm, as in test_vm_roles.py (whose helpers these reuse)."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
from test_vm_roles import DECIDED_NOT, host_part, no_containerd_here, run_role  # noqa: F401 (a fixture)


@pytest.fixture
def key_server(tmp_path):
    """A local stand-in for pkgs.k8s.io serving only the repository key (nothing leaves the host)."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "Release.key").write_text(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nstub\n-----END PGP PUBLIC KEY BLOCK-----\n"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.lint
def test_up_check_on_a_fresh_node_passes_kube_packages(tmp_path, key_server):
    """Item 7: in check mode the repository file is not written, so apt knows no kubelet yet: the
    install and the hold are skipped instead of failing (this host has no Kubernetes repository)."""
    assert not Path("/etc/apt/sources.list.d/kubernetes.list").exists()
    (tmp_path / "keyrings").mkdir()  # as on Debian 12 and Ubuntu 22.04+ (apt ships the directory)
    hosts = {"fresh": {"group": "kube_node", "vars": {}}}
    extravars = {
        "kube_version": "1.34",
        "kube_packages_repo": key_server,
        "kube_packages_keyring": str(tmp_path / "keyrings" / "kubernetes.gpg"),
    }
    rc, tasks, out = run_role(tmp_path, "kube_packages", hosts, extravars)
    assert rc == 0, out
    assert "changed: [fresh]" in host_part(tasks["Repository of Kubernetes 1.34"], "fresh")
    assert DECIDED_NOT in host_part(tasks["Install kubelet, kubeadm and kubectl"], "fresh")
    assert not Path("/etc/apt/sources.list.d/kubernetes.list").exists()  # check mode wrote nothing
    assert list((tmp_path / "keyrings").iterdir()) == []


def _node(name, labels, owned=None):
    meta = {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}}
    if owned is not None:
        meta["annotations"] = {"labctl.io/labels": owned}
    return json.dumps({"kind": "Node", "metadata": meta})


@pytest.mark.lint
def test_node_labels_removes_the_labels_it_set_earlier_and_only_those(tmp_path):
    """Item 10: w1 carries rack=r1, which labctl set (its annotation lists it) and the topology
    dropped, and team=net, which someone else set: rack goes, team stays. w2, labelled before the
    annotation existed, loses its old route-reflector label. Each node's annotation then lists the
    labels labctl set; cp's already does, so nothing changes there."""
    rules = [
        {"match": ["get nodes -o jsonpath"], "out": "cp=True\nw1=True\nw2=True\n"},
        {"match": ["get node cp -o json"], "out": _node("cp", {}, owned="")},
        {
            "match": ["get node w1 -o json"],
            "out": _node("w1", {"worker": "no-1", "rack": "r1", "team": "net"}, "rack,worker"),
        },
        {"match": ["get node w2 -o json"], "out": _node("w2", {"worker": "no-2", "route-reflector": "true"})},
    ]
    hosts = {
        "cp": {"group": "kube_control_plane", "vars": {"node_name": "cp", "node_labels": {}}},
        "w1": {"group": "kube_node", "vars": {"node_name": "w1", "node_labels": {"worker": "no-1"}}},
        "w2": {"group": "kube_node", "vars": {"node_name": "w2", "node_labels": {"worker": "no-2"}}},
    }
    # not in check mode: the role's wait for Ready needs kubectl's answer; the stubs only log calls
    rc, tasks, out = run_role(tmp_path, "node_labels", hosts, {"node_labels_wait_delay": 0}, rules, check=False)
    assert rc == 0, out
    calls = [line.split("admin.conf ", 1)[1].strip() for line in (tmp_path / "stub.log").read_text().splitlines()]
    changes = sorted(c for c in calls if c.startswith(("label", "annotate")))
    assert changes == [
        "annotate node w1 labctl.io/labels=worker --overwrite",
        "annotate node w2 labctl.io/labels=worker --overwrite",
        "label node w1 rack-",
        "label node w2 route-reflector-",
    ], calls  # team=net is not labctl's; cp's annotation is already right; worker=no-N is there already


@pytest.mark.lint
@pytest.mark.usefixtures("no_containerd_here")
def test_the_containerd_each_node_runs_is_recorded_for_labctl(tmp_path):
    """Item 9: after the containerd role, containerd_record writes what each node runs into the lab
    dir: `up` has an executable upstream containerd, `none` has none (this host has no package)."""
    binary = tmp_path / "containerd"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    hosts = {
        "up": {"group": "kube_node", "vars": {"containerd_record_upstream_binary": str(binary)}},
        "none": {"group": "kube_node", "vars": {"containerd_record_upstream_binary": str(tmp_path / "absent")}},
    }
    rc, tasks, out = run_role(tmp_path, "containerd_record", hosts, {"lab_dir": str(tmp_path)}, check=False)
    assert rc == 0, out
    assert json.loads((tmp_path / "decided.json").read_text()) == {"containerd_source": {"up": "upstream", "none": ""}}


@pytest.mark.unit
def test_labctl_keeps_the_first_containerd_decision_and_passes_it_back(tmp_path):
    from labctl.app import decided
    from labctl.app.lab import Lab
    from labctl.plan import layout

    lab = Lab(layout.LabDir(tmp_path / "lab"))
    lab.dir.root.mkdir()
    assert decided.extravars(lab.state()) == {}  # a fresh lab: the role decides
    (lab.dir.root / decided.FILE).write_text(json.dumps({"containerd_source": {"cp": "upstream", "w1": "upstream"}}))
    decided.collect(lab)
    assert not (lab.dir.root / decided.FILE).exists()
    assert lab.state()["decided"] == {"containerd_source": {"cp": "upstream", "w1": "upstream"}}
    assert decided.extravars(lab.state()) == {"containerd_source": "upstream"}
    # a run that did not reach the runtime (or a node not installed yet) keeps what was recorded
    (lab.dir.root / decided.FILE).write_text(json.dumps({"containerd_source": {"cp": "", "w1": "upstream"}}))
    decided.collect(lab)
    assert decided.extravars(lab.state()) == {"containerd_source": "upstream"}
    # nodes that run different ones: no lab-wide choice is forced
    (lab.dir.root / decided.FILE).write_text(json.dumps({"containerd_source": {"w1": "distro"}}))
    decided.collect(lab)
    assert decided.extravars(lab.state()) == {}
