"""`labctl validate`: one `FILE:LINE: path: message (hint)` line per problem, exit 2, no traceback."""

import json
import re
import time

import pytest
import yaml

from conftest import SEED, labctl
from labctl.errors import TopologyError
from labctl.spec import schedule, topology

pytestmark = pytest.mark.unit

LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<path>\S+): (?P<msg>.+)$")


def seed_data() -> dict:
    return yaml.safe_load(SEED.read_text())


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyError) as e:
        topology.loads(text, "t.yml")
    lines = e.value.problems
    for line in lines:
        assert LINE.match(line), line
    return lines


def mutate(fn) -> str:
    d = seed_data()
    fn(d)
    return yaml.safe_dump(d, sort_keys=False)


def test_seed_is_valid_and_plans_the_seed_table():
    t = topology.load(SEED)
    p = schedule.plan(t)
    assert [(n.name, str(n.address), str(n.tunnel_ip), str(n.block)) for n in p.nodes] == [
        ("k8s-master", "10.12.22.1", "192.168.0.1", "192.168.0.0/24"),
        ("k8s-worker-1", "10.12.22.2", "192.168.1.1", "192.168.1.0/24"),
        ("k8s-worker-2", "10.12.22.3", "192.168.2.1", "192.168.2.0/24"),
    ]
    assert [(w.name, w.node, str(w.ip)) for w in p.pods] == [
        ("pod-a", "k8s-worker-1", "192.168.1.2"),
        ("pod-b", "k8s-worker-2", "192.168.2.2"),
    ]


CASES = {
    # name: (topology text or mutation, expected path, expected words in the message)
    "yaml syntax": ("name: x\nnodes: [a, b\n", "(document)", "YAML syntax error"),
    "empty file": ("", "(document)", "empty"),
    "not a mapping": ("- a\n- b\n", "(document)", "mapping"),
    "duplicate key": (
        SEED.read_text().replace("  k8s-worker-2:", "  k8s-worker-1:"),
        "nodes.k8s-worker-1",
        "duplicate key",
    ),
    "unknown top key": (lambda d: d.update(colour="red"), "colour", "unknown field"),
    "unknown nested key": (lambda d: d["calico"].update(mtu=1440), "calico.mtu", "unknown field"),
    "unknown node key": (lambda d: d["nodes"]["k8s-master"].update(cpu=2), "nodes.k8s-master.cpu", "unknown field"),
    "wrong type": (lambda d: d["calico"].update(block_size="big"), "calico.block_size", "integer"),
    "float version": (lambda d: d["kubernetes"].update(version=1.3), "kubernetes.version", "string"),
    "bad enum": (lambda d: d["calico"].update(encapsulation="ipip"), "calico.encapsulation", "not one of"),
    "bad provider": (lambda d: d.update(provider="kvm"), "provider", "not one of"),
    "bad lab name": (lambda d: d.update(name="Seed_Lab"), "name", "pattern"),
    "bad node name": (
        lambda d: d["nodes"].update({"K8s_Node": {"role": "worker", "address": "10.12.22.9"}}),
        "nodes.K8s_Node",
        "DNS-1123",
    ),
    "no control plane": (
        lambda d: d["nodes"]["k8s-master"].update(role="worker"),
        "nodes",
        "exactly one control-plane",
    ),
    "two control planes": (
        lambda d: d["nodes"]["k8s-worker-1"].update(role="control-plane"),
        "nodes",
        "exactly one control-plane",
    ),
    "malformed address": (
        lambda d: d["nodes"]["k8s-master"].update(address="10.12.22.300"),
        "nodes.k8s-master.address",
        "not an IPv4",
    ),
    "duplicate address": (
        lambda d: d["nodes"]["k8s-worker-2"].update(address="10.12.22.2"),
        "nodes.k8s-worker-2.address",
        "already used",
    ),
    "address outside lan": (
        lambda d: d["nodes"]["k8s-master"].update(address="10.13.0.1"),
        "nodes.k8s-master.address",
        "not inside",
    ),
    "network address": (
        lambda d: d["nodes"]["k8s-master"].update(address="10.12.0.0"),
        "nodes.k8s-master.address",
        "network or broadcast",
    ),
    "broadcast address": (
        lambda d: d["nodes"]["k8s-master"].update(address="10.12.255.255"),
        "nodes.k8s-master.address",
        "network or broadcast",
    ),
    "gateway address": (
        lambda d: d["nodes"]["k8s-master"].update(address="10.12.255.254"),
        "nodes.k8s-master.address",
        "gateway",
    ),
    "gateway outside lan": (lambda d: d["network"].update(gateway="10.13.0.1"), "network.gateway", "not inside"),
    "host bits": (lambda d: d["network"].update(lan="10.12.0.1/16"), "network.lan", "host bits"),
    "lan overlaps pods": (
        lambda d: (
            d["kubernetes"].update(pod_subnet="10.0.0.0/8", service_subnet="172.20.0.0/16")
            or d["calico"].update(pool="10.200.0.0/16")
        ),
        "kubernetes.pod_subnet",
        "overlaps",
    ),
    "services overlap pods": (
        lambda d: d["kubernetes"].update(service_subnet="192.168.128.0/17"),
        "kubernetes.service_subnet",
        "overlaps",
    ),
    "pool outside pod subnet": (lambda d: d["calico"].update(pool="172.16.0.0/16"), "calico.pool", "not inside"),
    "pool too small": (lambda d: d["calico"].update(pool="192.168.0.0/23"), "calico.pool", "fewer than"),
    "block size range": (lambda d: d["calico"].update(block_size=33), "calico.block_size", "out of range"),
    "block larger than pool": (
        lambda d: d["calico"].update(block_size=20, pool="192.168.0.0/22"),
        "calico.block_size",
        "larger than the pool",
    ),
    "asn zero": (lambda d: d["calico"].update(asn=0), "calico.asn", "AS number"),
    "asn too big": (lambda d: d["calico"].update(asn=2**32), "calico.asn", "AS number"),
    "k8s version unsupported": (
        lambda d: d["kubernetes"].update(version="1.29"),
        "kubernetes.version",
        "not supported",
    ),
    "k8s version malformed": (lambda d: d["kubernetes"].update(version="v1.34"), "kubernetes.version", "1.MINOR"),
    "calico version malformed": (lambda d: d["calico"].update(version="3.30"), "calico.version", "vX.Y.Z"),
    "calico version unsupported": (lambda d: d["calico"].update(version="v3.20.1"), "calico.version", "not supported"),
    "label key": (
        lambda d: d["nodes"]["k8s-worker-1"]["labels"].update({"-bad": "x"}),
        "nodes.k8s-worker-1.labels.-bad",
        "label key",
    ),
    "label prefix": (
        lambda d: d["nodes"]["k8s-worker-1"]["labels"].update({"Ex_ample.com/a": "x"}),
        "nodes.k8s-worker-1.labels.Ex_ample.com/a",
        "prefix",
    ),
    "label value": (
        lambda d: d["nodes"]["k8s-worker-1"]["labels"].update(worker="no 1"),
        "nodes.k8s-worker-1.labels.worker",
        "label value",
    ),
    "label value too long": (
        lambda d: d["nodes"]["k8s-worker-1"]["labels"].update(worker="a" * 64),
        "nodes.k8s-worker-1.labels.worker",
        "label value",
    ),
    "label bool": (
        "name: x\nnetwork: {lan: 10.1.0.0/16}\nnodes:\n  a: {role: control-plane, address: 10.1.0.1, labels: {worker: no}}\n",
        "nodes.a.labels.worker",
        "string",
    ),
    "selector matches nothing": (
        lambda d: d["workloads"][0]["node_selector"].update(worker="no-9"),
        "workloads[0].node_selector",
        "matches no node",
    ),
    "duplicate workload": (lambda d: d["workloads"].append({"name": "pod-a"}), "workloads[2].name", "twice"),
    "bad interface": (
        lambda d: d["defaults"].update(interface="a-very-long-nic-name"),
        "defaults.interface",
        "interface name",
    ),
    "bad ssh jump": (lambda d: d["defaults"]["ssh"].update(jump="root@@host"), "defaults.ssh.jump", "user@"),
    "missing nodes": (lambda d: d.pop("nodes"), "nodes", "required"),
    "python tag": ("name: !!python/object/apply:os.system ['true']\n", "(document)", "unsupported YAML"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_rejects(case):
    text, path, words = CASES[case]
    if callable(text):
        text = mutate(text)
    lines = problems(text)
    hits = [x for x in lines if LINE.match(x).group("path") == path and words.lower() in x.lower()]
    assert hits, f"expected {path}: ...{words}... in {lines}"


def test_line_numbers_point_at_the_field():
    text = SEED.read_text().replace("block_size: 24", "block_size: 99")
    [line] = problems(text)
    want = 1 + next(i for i, x in enumerate(text.splitlines()) if "block_size: 99" in x)
    assert line.startswith(f"t.yml:{want}: calico.block_size:")


def test_several_problems_one_line_each():
    text = mutate(lambda d: (d["calico"].update(asn=0), d["nodes"]["k8s-worker-2"].update(address="10.12.22.2")))
    lines = problems(text)
    assert len(lines) == 2


def test_alias_bomb_is_bounded():
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, 10):
        prev = chr(96 + i)
        cur = chr(97 + i)
        bomb += f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    start = time.monotonic()
    lines = problems(bomb)
    assert time.monotonic() - start < 5
    assert any("alias bomb" in x for x in lines)


def test_deep_nesting_is_an_error_not_a_crash():
    lines = problems("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert lines


def test_cli_validate_exit_codes(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(mutate(lambda d: d["calico"].update(asn=0)))
    p = labctl("validate", "-t", bad)
    assert p.returncode == 2
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith(f"{bad}:") and "calico.asn" in line
    ok = labctl("validate", "-t", SEED)
    assert ok.returncode == 0 and "ok" in ok.stdout
    missing = labctl("validate", "-t", tmp_path / "nope.yml")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_schema_is_json_schema():
    p = labctl("schema", check=True)
    s = json.loads(p.stdout)
    assert s["type"] == "object"
    assert {"name", "nodes"} <= set(s["required"])
    assert {"required": ["network"]} in s["anyOf"] and {"required": ["networks"]} in s["anyOf"]
    assert s["additionalProperties"] is False


def test_the_spec_package_imports_nothing_above_it():
    """Issue 20: reading a topology needs no provider and no node (spec is the lowest layer but one),
    not even in a function: the qemu image check and the netem values live in spec."""
    import ast
    from pathlib import Path

    import labctl.spec

    below = ("labctl.spec", "labctl.errors", "labctl.progress", "labctl.output", "labctl.fanout")
    pkg = Path(labctl.spec.__file__).parent
    imported = {
        f"{f.name}: {n.module}"
        for f in pkg.glob("*.py")
        for n in ast.walk(ast.parse(f.read_text()))
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("labctl")
        if not (n.module + ".").startswith(tuple(b + "." for b in below))
    }
    assert imported == set()


def test_the_images_validation_takes_for_built_are_the_ones_labctl_builds():
    from labctl.providers.qemu import image
    from labctl.spec.schema import BUILT_IMAGES

    assert BUILT_IMAGES == tuple(image.RECIPES)
