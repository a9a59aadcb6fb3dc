"""The wheel carries playbooks and templates, and labctl runs from it in any directory."""

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

pytestmark = pytest.mark.lint


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [whl] = out.glob("labctl-*.whl")
    return whl


def test_wheel_ships_playbooks_and_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in (
        "labctl/playbooks/netns-up.yml",
        "labctl/playbooks/vm-up.yml",
        "labctl/playbooks/vm-down.yml",
        "labctl/playbooks/roles/netns_bird/files/bird-up.sh",
        "labctl/playbooks/roles/validate_inventory/tasks/main.yml",
        "labctl/templates/bird.conf.j2",
        "labctl/templates/ansible-inventory.yml.j2",
        "labctl/templates/seed-topology.yml",
        # `labctl view`'s page: no build step, no network at run time
        "labctl/static/view.html",
        "labctl/static/view.js",
        "labctl/static/view.css",
        "labctl/static/cytoscape.min.js",
        "labctl/static/cytoscape.LICENSE",
    ):
        assert want in names, want


def test_installed_wheel_works_from_any_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), LABCTL_HOME=str(tmp_path / "home"))
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=elsewhere, env=env, capture_output=True, text=True)  # noqa: E731
    where = run(
        "-c",
        "import labctl.plan.layout as l; print(l.__file__); print(l.shipped('playbooks')); print(l.seed_topology())",
    )
    lines = where.stdout.split()
    assert all(x.startswith(str(target)) for x in lines), where.stdout + where.stderr
    p = run("-m", "labctl", "render", "-o", "lab")  # no -t: the built-in seed lab
    assert p.returncode == 0, p.stderr
    assert (elsewhere / "lab" / "ansible-inventory.yml").is_file()
    assert (elsewhere / "lab" / "bird" / "k8s-master.conf").is_file()
    assert (target / "bin" / "labctl").is_file()


def test_repo_checks_are_clean():
    p = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "labctl", "tests", "bench"], cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout
