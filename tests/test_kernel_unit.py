"""The kernel tier's parts that need no VM: its image recipe and conftest's rule for a missing tool."""

import re
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


def test_make_test_runs_the_vm_files_first_as_one_unit_and_every_other_file_as_its_own():
    """`make test`'s two workers (--dist loadfile, conftest's scheduler): the files that boot VMs are one unit,
    first (a netns-tier test there too: it shares the file's module fixtures); any other file is its own unit."""
    f = lambda path, t: Item(tier=t, marks=[], nodeid=f"tests/{path}::t_{t}")  # noqa: E731
    items = [f("a.py", "unit"), f("test_qemu.py", "netns"), f("b.py", "netns"), f("test_kernel.py", "kernel")]
    conftest.schedule(items)
    assert [i.nodeid for i in items] == [
        "tests/test_qemu.py::t_netns",
        "tests/test_kernel.py::t_kernel",
        "tests/a.py::t_unit",
        "tests/b.py::t_netns",
    ]
    assert [conftest.unit_of(i.nodeid) for i in items] == ["vm", "vm", "tests/a.py", "tests/b.py"]
    with pytest.raises(pytest.UsageError, match="add tests/c.py to VM_FILES"):
        conftest.schedule([f("c.py", "qemu")])
    conftest.schedule([Item(tier="qemu", marks=[], nodeid="sample.py::t")])  # not this suite's file


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
