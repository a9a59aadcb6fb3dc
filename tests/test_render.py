"""Golden tests of rendered lab directories, and escaping: no topology string can inject YAML
or Jinja. Update the goldens with LABCTL_UPDATE_GOLDEN=1 after reviewing the diff."""

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, labctl
from labctl.outputs import render
from labctl.plan import layout
from labctl.spec import schedule, schema, topology

pytestmark = pytest.mark.unit

GOLDEN = ROOT / "tests" / "golden"
TOPOLOGIES = {
    "seed": "inventories/seed/topology.yml",
    "vxlan-4node": "inventories/vxlan-4node/topology.yml",
    "vm-cloud": "inventories/vm-cloud/topology.yml",
    "route-reflectors": "inventories/route-reflectors/topology.yml",
    "two-racks-vm": "inventories/two-racks-vm/topology.yml",
}


def rendered(src: Path, out: Path, ipip: bool = True) -> dict[str, str]:
    files = render.render(schedule.plan(topology.load(src)), layout.LabDir(out), src, ipip=ipip)
    return {str(f.relative_to(out)): f.read_text().replace(str(out), "@LABDIR@") for f in files}


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_golden(name, tmp_path):
    got = rendered(ROOT / TOPOLOGIES[name], tmp_path / "lab", ipip=False)
    gdir = GOLDEN / name
    if os.environ.get("LABCTL_UPDATE_GOLDEN"):
        for rel, text in got.items():
            (gdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (gdir / rel).write_text(text)
    want = {str(p.relative_to(gdir)): p.read_text() for p in gdir.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(want)
    for rel in want:
        assert got[rel] == want[rel], f"{name}/{rel} differs from the golden file"


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_rendered_documents_are_valid(name, tmp_path):
    out = tmp_path / "lab"
    rendered(ROOT / TOPOLOGIES[name], out)
    inv = yaml.safe_load((out / "ansible-inventory.yml").read_text())
    t = topology.load(ROOT / TOPOLOGIES[name])
    cp = inv["all"]["children"]["kube_control_plane"]["hosts"]
    workers = inv["all"]["children"]["kube_node"]["hosts"]
    assert len(cp) == 1 and len(cp) + len(workers) == len(t.nodes)
    init = list(yaml.safe_load_all((out / "kubeadm/init.yaml").read_text()))
    assert [d["kind"] for d in init] == ["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"]
    assert init[0]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    # v1beta4: kubeletExtraArgs is a list of name/value pairs
    assert init[0]["nodeRegistration"]["kubeletExtraArgs"][0]["name"] == "node-ip"
    assert init[1]["networking"]["podSubnet"] == str(t.kubernetes.pod_subnet)
    assert init[2]["cgroupDriver"] == "systemd"
    for w in workers:
        j = yaml.safe_load((out / f"kubeadm/join-{w}.yaml").read_text())
        assert j["kind"] == "JoinConfiguration" and j["nodeRegistration"]["name"] == w
        assert j["discovery"]["bootstrapToken"]["token"] == "{{ kubeadm_join_token }}"
    inst, api = yaml.safe_load_all((out / "calico/custom-resources.yaml").read_text())
    pool = inst["spec"]["calicoNetwork"]["ipPools"][0]
    assert pool["encapsulation"] in schema.ENCAPSULATIONS
    assert pool["blockSize"] == t.calico.block_size
    assert api["kind"] == "APIServer"
    labels = yaml.safe_load((out / "node-labels.yaml").read_text())
    assert labels == {n: dict(node.labels) for n, node in t.nodes.items()}
    data = json.loads((out / "topology-data.json").read_text())
    assert [n["name"] for n in data["nodes"]] == list(t.nodes)
    assert (out / "bird").is_dir() == (t.provider == "netns")


def test_bird_configs_parse(tmp_path):
    import shutil
    import subprocess

    if not shutil.which("bird"):
        pytest.fail("bird is not installed (make deps installs bird2)")
    for name in ("seed", "vxlan-4node", "route-reflectors"):
        out = tmp_path / name
        rendered(ROOT / TOPOLOGIES[name], out, ipip=False)
        for conf in (out / "bird").iterdir():
            p = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr


def test_strings_cannot_inject_yaml_or_jinja(tmp_path):
    src = tmp_path / "t.yml"
    evil_key = "/tmp/k\" : x {{ lookup('pipe', 'id') }} {% raw %}"
    text = (ROOT / TOPOLOGIES["vm-cloud"]).read_text().replace("~/.ssh/w2", json.dumps(evil_key))
    src.write_text(text)
    out = tmp_path / "lab"
    rendered(src, out)
    raw = (out / "ansible-inventory.yml").read_text()
    assert "!unsafe" in raw
    inv = yaml.load(raw, Loader=_UnsafeLoader)
    host = inv["all"]["children"]["kube_node"]["hosts"]["k8s-worker-2"]
    assert host["ansible_ssh_private_key_file"] == evil_key
    assert "x" not in host  # nothing was added as a key


class _UnsafeLoader(yaml.SafeLoader):
    pass


_UnsafeLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def test_render_cli_writes_without_touching_hosts(tmp_path):
    before = Path("/sys/class/net").iterdir() if Path("/sys/class/net").exists() else []
    before = sorted(p.name for p in before)
    p = labctl("render", "-t", ROOT / TOPOLOGIES["seed"], "-o", tmp_path / "lab", check=True)
    assert "ansible-inventory.yml" in p.stdout
    assert (tmp_path / "lab" / "bird" / "k8s-master.conf").is_file()
    after = sorted(p.name for p in Path("/sys/class/net").iterdir()) if Path("/sys/class/net").exists() else []
    assert before == after
