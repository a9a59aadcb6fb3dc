"""Issue 11 item 16: a built lab refuses a Kubernetes version change, saying what to do, before
anything runs (labctl installs a version; a new patch without `kubeadm upgrade` would put a new
kubelet under an old control plane, and a new minor was silently ignored)."""

import pytest
import yaml

from conftest import ROOT, labctl
from labctl.app.lab import Lab
from labctl.outputs import render
from labctl.plan import diff as reconcile
from labctl.plan import layout
from labctl.spec import schedule, schema, topology

pytestmark = pytest.mark.unit

VM_CLOUD = ROOT / "inventories" / "vm-cloud" / "topology.yml"


def _data(version: str):
    d = yaml.safe_load(VM_CLOUD.read_text())
    d["kubernetes"]["version"] = version
    t = schema.Topology.model_validate(d)
    plan = schedule.plan(t)
    return render.build(plan, layout.LabDir(ROOT / "unused"))


def test_a_version_change_is_a_lab_wide_change_that_cannot_be_applied():
    for new in ("1.34.3", "1.35"):
        d = reconcile.diff(_data("1.34"), _data(new))
        (change,) = [c for c in d.changes if c.kind == "lab"]
        assert change.name == "kubernetes.version"
        assert (
            f"1.34 -> {new}" in change.detail and "kubeadm upgrade" in change.detail and "labctl down" in change.detail
        )
    assert reconcile.diff(_data("1.34"), _data("1.34")).empty


def test_up_refuses_it_on_a_built_lab(labhome, tmp_path):
    src = tmp_path / "topology.yml"
    src.write_text(VM_CLOUD.read_text())
    lab = Lab(layout.LabDir(labhome / "seed-vm"))
    render.render(schedule.plan(topology.load(src)), lab.dir, src)
    lab.save_state(name="seed-vm", provider="vm", phase="done")  # as a finished `up` leaves it
    changed = tmp_path / "newer.yml"
    changed.write_text(VM_CLOUD.read_text().replace('version: "1.34"', 'version: "1.35"'))
    p = labctl("up", "-t", changed, home=labhome)
    assert p.returncode == 2, p.stderr
    assert "cannot change kubernetes.version" in p.stderr and "labctl down" in p.stderr, p.stderr
    assert "Running phase" not in p.stderr  # refused before anything ran
