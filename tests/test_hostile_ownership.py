"""Issue 19 part A without a host lab: labctl removes only what carries its mark (lab dirs, images),
an image a lab's disks are based on is refused, a router's new asn replans its peers, `list` shows a
failed bootstrap."""

import json
import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from conftest import ROOT, SEED, write_yaml
from labctl import cli
from labctl.outputs import render
from labctl.plan import diff as reconcile
from labctl.plan.layout import LabDir
from labctl.spec import schedule, topology

pytestmark = pytest.mark.unit


def invoke(*args, **env):
    return CliRunner().invoke(cli.app, [str(a) for a in args], env=env or None)


def seed_as(tmp_path, name):
    d = yaml.safe_load(SEED.read_text())
    d["name"] = name
    p = tmp_path / f"{name}.yml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


# -- 2. down --name removes only a lab dir -------------------------------------------------------


def test_down_by_name_refuses_a_directory_that_is_not_a_lab(tmp_path, labhome):
    for name in ("images", "cache", "plain"):
        (labhome / name / "sub").mkdir(parents=True)
        (labhome / name / "sub" / "keep").write_text("data\n")
        r = invoke("down", "--name", name)
        assert r.exit_code == 2, r.output
        assert "is not a labctl lab" in r.stderr and "hint:" in r.stderr and len(r.stderr.splitlines()) == 1
        assert (labhome / name / "sub" / "keep").read_text() == "data\n"
    # `up` of a lab of that name neither writes its log into it nor removes it when refused
    r = invoke("up", "-t", seed_as(tmp_path, "images"))
    assert r.exit_code == 2 and "is not a labctl lab" in r.stderr, r.output
    assert sorted(p.name for p in (labhome / "images").iterdir()) == ["sub"]


def test_labs_of_this_labctl_carry_the_mark_and_older_ones_are_still_labs(tmp_path, labhome):
    t = seed_as(tmp_path, "lcmark")
    assert invoke("render", "-t", t).exit_code == 0
    lab = LabDir(labhome / "lcmark")
    assert lab.mark.is_file() and lab.is_marked()
    assert invoke("down", "--name", "lcmark").exit_code == 0 and not lab.root.exists()
    # a lab dir written before the mark existed: known by the files only labctl writes there
    old = LabDir(labhome / "lcold")
    render.render(schedule.plan(topology.load(t)), old, t)
    old.mark.unlink()
    assert old.is_marked()
    assert invoke("down", "--name", "lcold").exit_code == 0 and not old.root.exists()


# -- 3. image rm ---------------------------------------------------------------------------------


def fake_image(images, dirname):
    d = images / dirname
    d.mkdir(parents=True)
    (d / "image.json").write_text(json.dumps({"name": dirname.rsplit("-", 1)[0], "recipe": "x"}))
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(d / "base.raw"), "1M"], check=True)
    return d


def test_image_rm_removes_only_images_and_never_one_a_lab_uses(tmp_path, labhome, monkeypatch):
    images = tmp_path / "shared"
    monkeypatch.setenv("LABCTL_IMAGES", str(images))
    used = fake_image(images, "debian-12-aaaaaaaaaaaa")
    spare = fake_image(images, "debian-13-bbbbbbbbbbbb")
    (images / "photos").mkdir()
    (images / "photos" / "cat.jpg").write_text("not labctl's\n")
    # a qemu lab of this home whose node disk is an overlay on the image (what machine.overlay makes)
    node = labhome / "lcq" / "nodes" / "n1"
    node.mkdir(parents=True)
    (labhome / "lcq" / "state.json").write_text(json.dumps({"provider": "qemu", "phase": "ready"}))
    base = used / "base.raw"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(node / "disk.qcow2")], check=True
    )

    r = invoke("image", "rm", "nosuch")
    assert r.exit_code == 2 and "no image 'nosuch'" in r.stderr and "debian-12" in r.stderr, r.output
    for args in (["image", "rm"], ["image", "rm", "debian-12"]):
        r = invoke(*args)
        assert r.exit_code == 1, (args, r.output)
        assert "in use by lab lcq" in r.stderr and "--force" in r.stderr and len(r.stderr.splitlines()) == 1
        assert used.is_dir() and spare.is_dir()
    r = invoke("image", "rm", "debian-13")
    assert r.exit_code == 0 and not spare.exists() and used.is_dir(), r.output
    r = invoke("image", "rm", "--force")
    assert r.exit_code == 0, r.output
    assert not used.exists()
    assert (images / "photos" / "cat.jpg").read_text() == "not labctl's\n"  # not an image: never removed


# -- 10. a router's asn --------------------------------------------------------------------------


def test_a_routers_new_asn_replans_the_nodes_that_peer_with_it(tmp_path):
    def model(asn):
        d = yaml.safe_load((ROOT / "inventories/two-racks/topology.yml").read_text())
        d["routers"]["core"]["asn"] = asn
        t = topology.load(write_yaml(tmp_path / f"r{asn}.yml", d))
        return render.build(schedule.plan(t), LabDir(tmp_path / "two-racks"))

    d = reconcile.diff(model(65000), model(65010))
    assert [c.name for c in d.changes] == ["core"] and "asn 65000 -> 65010" in d.changes[0].detail
    nodes = ["k8s-master", "k8s-worker-1", "k8s-worker-2"]  # all peer with core (calico.bgp: tor)
    assert d.hosts["bgp"] == nodes and d.hosts["wait"] == nodes, d.hosts
    assert d.hosts["network"] == [] and d.hosts["workloads"] == []
    assert reconcile.refusal(d, "two-racks") is None  # applied by one `up`, not refused


# -- low: a failed bootstrap is listed as failed -------------------------------------------------


def test_list_shows_a_failed_bootstrap(tmp_path, labhome, monkeypatch):
    from labctl.errors import HostError
    from labctl.providers.netns import provider as netns

    def broken(self, data, progress):
        raise HostError("sshd of k8s-master did not start")

    monkeypatch.setattr(netns.NetnsProvider, "preflight", lambda self, data: [])
    monkeypatch.setattr(netns.NetnsProvider, "bootstrap", broken)
    r = invoke("up", "-t", seed_as(tmp_path, "lcbfail"))
    assert r.exit_code == 1 and "did not start" in r.stderr, r.output
    (row,) = json.loads(invoke("list", "-f", "json").stdout)
    assert row["phase"] == "failed", row
    assert LabDir(labhome / "lcbfail").mark.is_file()  # `up` marks the lab dir it makes
    st = json.loads((labhome / "lcbfail" / "state.json").read_text())
    assert st["stopped_at"].startswith("bootstrap") and "did not start" in st["error"]


# -- low: one problem, one exit code -------------------------------------------------------------


def test_render_into_a_file_is_bad_input(tmp_path, labhome):
    f = tmp_path / "file"
    f.write_text("keep\n")
    for target in ("/dev/null", f):
        r = invoke("render", "-o", target)
        assert r.exit_code == 2 and "is not a directory" in r.stderr, r.output
    assert f.read_text() == "keep\n"
