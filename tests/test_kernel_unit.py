"""The kernel tier's parts that need no VM: its image recipe and conftest's rule for a missing tool."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import conftest
from conftest import ROOT
from labctl.providers.qemu import image

pytestmark = pytest.mark.unit


def test_netns_image_has_what_make_up_installs():
    """debian-12-netns is where `make up` runs inside the VM: the Makefile's APT_PACKAGES (python3-pip
    aside: the venv's pip comes with python3-venv) are baked in, over debian-12's own packages."""
    make = (ROOT / "Makefile").read_text()
    apt = set(re.search(r"^APT_PACKAGES = (.*)$", make, re.M).group(1).split())
    r = image.RECIPES["debian-12-netns"]
    assert apt - {"python3-pip"} <= set(r["packages"]), apt - set(r["packages"])
    assert set(image.RECIPES["debian-12"]["packages"]) < set(r["packages"])
    assert "bird2" not in image.RECIPES["debian-12"]["packages"]  # calico-node's BIRD owns port 179 there
    assert r["customize"].startswith(image.RECIPES["debian-12"]["customize"])
    assert image.recipe_hash("debian-12-netns") != image.recipe_hash("debian-12")


class Item(SimpleNamespace):
    def iter_markers(self):
        return [SimpleNamespace(name=self.tier)]

    def add_marker(self, m):
        self.marks.append(m)


def test_make_test_runs_the_vm_files_first_as_one_group_and_every_other_file_as_its_own():
    """`make test`'s two workers (--dist loadgroup): every test of a file that boots VMs in group "vm", first (a
    netns-tier test in such a file too: it shares the file's module fixtures); any other file is its own group."""
    f = lambda path, t: Item(tier=t, marks=[], path=Path(path), nodeid=f"{path}::t_{t}")  # noqa: E731
    items = [f("a.py", "unit"), f("q.py", "netns"), f("b.py", "netns"), f("q.py", "qemu"), f("k.py", "kernel")]
    conftest.schedule(items)
    assert [(str(i.path), i.tier) for i in items] == [
        ("q.py", "netns"),
        ("q.py", "qemu"),
        ("k.py", "kernel"),
        ("a.py", "unit"),
        ("b.py", "netns"),
    ]
    groups = [[m.args[0] for m in i.marks if m.name == "xdist_group"] for i in items]
    assert groups == [["vm"], ["vm"], ["vm"], ["a.py"], ["b.py"]]


@pytest.mark.parametrize("ci, want", [("1", "xfail"), ("", "skip")])
def test_a_missing_vm_tool_is_a_strict_xfail_on_ci_and_a_skip_elsewhere(monkeypatch, ci, want):
    monkeypatch.setattr(conftest, "netns_missing", lambda: None)
    monkeypatch.setattr(conftest.shutil, "which", lambda t: None if t == "qemu-img" else f"/usr/bin/{t}")
    monkeypatch.setenv("CI", ci)
    kernel, netns = Item(tier="kernel", marks=[]), Item(tier="netns", marks=[])
    conftest.prerequisites([kernel, netns])
    [m] = kernel.marks
    assert m.name == want and "missing qemu-img" in m.kwargs["reason"]
    if want == "xfail":
        assert m.kwargs["strict"] is True and m.kwargs["run"] is False
    assert netns.marks == []  # the netns tests need no QEMU


def test_removing_debian_12_keeps_the_netns_image(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCTL_IMAGES", str(tmp_path))
    for d in ("debian-12-0123456789ab", "debian-12-netns-0123456789ab"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "image.json").write_text("{}")  # what a build leaves: the mark of an image dir
    assert image.remove("debian-12") == [str(tmp_path / "debian-12-0123456789ab")]
    assert image.remove("debian-12-netns") == [str(tmp_path / "debian-12-netns-0123456789ab")]
