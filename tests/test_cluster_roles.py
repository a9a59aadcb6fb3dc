"""The vm roles' decisions of issue 21 (items 7, 9, 10), run by ansible on this host in check mode
with stub kubectl/kubeadm, as in test_vm_roles.py (whose helpers these reuse)."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
from test_vm_roles import DECIDED_NOT, host_part, run_role


@pytest.fixture
def key_server(tmp_path):
    """A local stand-in for pkgs.k8s.io serving only the repository key (nothing leaves the host)."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "Release.key").write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nstub\n-----END PGP PUBLIC KEY BLOCK-----\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


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
