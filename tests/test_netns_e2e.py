"""The real path: the seed lab built with namespaces, sshd, BIRD and ansible on this host."""

import json
from pathlib import Path

import pytest

from conftest import SEED, host_snapshot, labctl, real_lab, residue

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def seed_lab(tmp_path_factory):
    with real_lab(SEED, require_up=False) as r:  # the first test asserts what `up` printed
        yield {"home": r.home, "up": r.up, "before": r.before}


def test_up_succeeds_with_phases_and_warning(seed_lab):
    up = seed_lab["up"]
    assert up.returncode == 0, up.stderr
    err = up.stderr
    for phase in (
        "preflight",
        "bootstrap (netns)",
        "Validate inventory",
        "BGP (BIRD, node-to-node mesh or route reflectors)",
        "Workloads",
        "Node labels",
    ):
        assert f"==> Running phase: {phase}" in err
    # labels are the last phase
    assert err.rindex("==> Running phase:") == err.index("==> Running phase: Node labels")
    assert err.count("this kernel has no ipip") == 1 or "ipip" not in err
    assert "k8s-worker-1" in err and "changed" in err


def test_state_records_tunnel_labels_and_placement(seed_lab):
    st = json.loads((seed_lab["home"] / "seed" / "state.json").read_text())
    assert st["phase"] == "ready"
    assert st["tunnel"]["device"] in ("tunl0", "vxlan.calico")
    if st["tunnel"]["device"] == "vxlan.calico":
        assert "ipip" in st["tunnel"]["fallback"]
    assert st["labels"] == {"k8s-master": {}, "k8s-worker-1": {"worker": "no-1"}, "k8s-worker-2": {"worker": "no-2"}}
    assert st["placement"] == {"pod-a": "k8s-worker-1", "pod-b": "k8s-worker-2"}
    log = Path(st["log"])
    assert log.is_file() and "TASK" in log.read_text()


def test_inspect_shows_the_seed_table(seed_lab):
    p = labctl("inspect", "--format", "json", home=seed_lab["home"], check=True)
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    want = {
        "k8s-master": ("10.12.22.1/16", "192.168.0.1", "192.168.0.0/24", {}),
        "k8s-worker-1": ("10.12.22.2/16", "192.168.1.1", "192.168.1.0/24", {"worker": "no-1"}),
        "k8s-worker-2": ("10.12.22.3/16", "192.168.2.1", "192.168.2.0/24", {"worker": "no-2"}),
    }
    assert set(rows) == set(want)
    for name, (phys, tun, block, labels) in want.items():
        r = rows[name]
        assert r["state"] == "running"
        assert r["hostname"] == name
        assert (r["interface"], r["physical_ip"]) == ("ens192", phys)
        assert r["tunnel_ip"] == tun and r["tunnel_device"] in ("tunl0", "vxlan.calico")
        assert r["block"] == block
        assert r["labels"] == labels
        assert r["bgp"]["established"] == r["bgp"]["expected"] == 2
        assert {p["name"] for p in r["bgp"]["peers"]} == {
            "Mesh_" + x.split("/")[0].replace(".", "_") for n, (x, *_) in want.items() if n != name
        }
    table = labctl("inspect", home=seed_lab["home"], check=True).stdout
    assert "10.12.22.2/16" in table and "worker=no-1" in table and "2/2" in table
    csv = labctl("inspect", "-f", "csv", home=seed_lab["home"], check=True).stdout.splitlines()
    assert csv[0].startswith("name,role,state") and len(csv) == 4


def test_verify_passes_every_check(seed_lab):
    p = labctl("verify", "--format", "json", home=seed_lab["home"])
    checks = json.loads(p.stdout)
    assert p.returncode == 0, p.stdout
    kinds = {c["check"] for c in checks}
    assert {"ssh", "bgp", "routes", "labels", "placement", "ping"} <= kinds
    assert all(c["ok"] for c in checks)
    assert [c["target"] for c in checks if c["check"] == "ping"] == ["pod-a->pod-b"]


def test_routes_are_learned_over_bgp(seed_lab):
    p = labctl("exec", "k8s-master", "--", "ip", "route", home=seed_lab["home"], check=True)
    lines = [x for x in p.stdout.splitlines() if x.startswith("192.168.1.0/24") or x.startswith("192.168.2.0/24")]
    assert len(lines) == 2 and all("proto bird" in x for x in lines)
    assert "blackhole 192.168.0.0/24 proto bird" in p.stdout


def test_a_node_is_a_machine_of_its_own(seed_lab):
    # its own hostname, /etc/hosts and root home: the host's dotfiles (which bash sources on every
    # SSH command) and resolver stay the host's
    home = seed_lab["home"]
    script = 'hostname; echo "$HOME"; getent hosts k8s-worker-2; cat /etc/resolv.conf'
    p = labctl("exec", "k8s-worker-1", "--", "sh", "-c", script, home=home, check=True)
    name, root_home, peer, *resolv = p.stdout.splitlines()
    assert name == "k8s-worker-1"
    assert root_home == str(home / "seed" / "nodes" / "k8s-worker-1" / "root")
    assert Path(root_home).is_dir() and Path(root_home).stat().st_mode & 0o777 == 0o700
    assert peer.split() == ["10.12.22.3", "k8s-worker-2"]
    assert not any(x.startswith("nameserver") for x in resolv)


def test_pod_is_calico_style(seed_lab):
    p = labctl(
        "exec",
        "k8s-worker-1",
        "--",
        "ip",
        "netns",
        "exec",
        "lc-seed.k8s-worker-1.pod-a",
        "ip",
        "route",
        home=seed_lab["home"],
        check=True,
    )
    assert "default via 169.254.1.1 dev eth0" in p.stdout
    p = labctl(
        "exec",
        "k8s-worker-1",
        "--",
        "ip",
        "-n",
        "lc-seed.k8s-worker-1.pod-a",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
        home=seed_lab["home"],
        check=True,
    )
    assert " 192.168.1.2/32 " in p.stdout
    p = labctl("exec", "k8s-worker-1", "--", "ip", "route", "show", "192.168.1.2", home=seed_lab["home"], check=True)
    assert "dev cali" in p.stdout and "scope link" in p.stdout


def test_second_up_changes_nothing(seed_lab):
    p = labctl("up", "-t", SEED, home=seed_lab["home"])
    assert p.returncode == 0, p.stderr
    assert " changed " not in p.stderr, p.stderr


def test_zz_down_leaves_nothing_behind(seed_lab):
    home = seed_lab["home"]
    p = labctl("down", home=home)
    assert p.returncode == 0, p.stderr
    assert not (home / "seed").exists()
    left = residue(seed_lab["before"], host_snapshot(home))
    assert left == {}, left
    again = labctl("down", home=home)
    assert again.returncode == 0
