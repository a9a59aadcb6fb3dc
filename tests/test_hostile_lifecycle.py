"""Issue 15, lifecycle side, without a host lab: render's target, plans that cannot apply in place,
the same checks in validate/--dry-run/up, list's formats, and the small CLI items."""

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from conftest import SEED, labctl
from labctl import cli
from labctl.outputs import render
from labctl.plan import diff as reconcile
from labctl.plan.layout import LabDir
from labctl.spec import generate, schedule, topology

pytestmark = pytest.mark.unit


def invoke(*args, **env):
    return CliRunner().invoke(cli.app, [str(a) for a in args], env=env or None)


def seed_as(tmp_path, name="lchost", lan="10.92.0.0/16", **changes):
    d = yaml.safe_load(SEED.read_text())
    d["name"] = name
    net = lan.split(".")[1]
    d["network"] = {"lan": lan}
    for i, node in enumerate(d["nodes"].values()):
        node["address"] = f"10.{net}.22.{i + 1}"
    d.update(changes)
    p = tmp_path / f"{name}-{net}.yml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def fake_running(home, topo_file) -> LabDir:
    """A lab dir as `up` leaves it (rendered, with its state), without building anything."""
    t = topology.load(topo_file)
    lab = LabDir(home / t.name)
    render.render(schedule.plan(t), lab, topo_file)
    lab.state.write_text(json.dumps({"name": t.name, "provider": "netns", "phase": "ready"}))
    return lab


# -- 1. render -o ----------------------------------------------------------------------------


def test_render_refuses_a_directory_that_is_not_a_lab(tmp_path, labhome):
    target = tmp_path / "etc"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    (target / "ssh_config").write_text("keep me\n")
    r = invoke("render", "-t", SEED, "-o", target)
    assert r.exit_code == 2, r.output
    assert "not a lab directory" in r.stderr and "hint:" in r.stderr and len(r.stderr.splitlines()) == 1
    assert (target / "ssh_config").read_text() == "keep me\n"
    assert sorted(p.name for p in target.iterdir()) == ["ssh_config"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_render_never_writes_over_a_running_labs_directory(tmp_path, labhome):
    t = seed_as(tmp_path)
    lab = fake_running(labhome, t)
    before = lab.topology_data.read_text()
    other = seed_as(tmp_path, lan="10.93.0.0/16")
    for args in (["-o", lab.root], []):  # -o the lab's dir, or the default (the lab's own dir)
        r = invoke("render", "-t", other, *args)
        assert r.exit_code == 2, r.output
        assert "lab that is up" in r.stderr and "labctl down" in r.stderr
    assert lab.topology_data.read_text() == before


def test_render_into_a_new_or_empty_dir_and_over_its_own_render(tmp_path, labhome):
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (tmp_path / "new", empty, empty):  # twice into the same: its own earlier render
        r = invoke("render", "-t", SEED, "-o", target)
        assert r.exit_code == 0, r.output
        assert (target / "topology-data.json").is_file()


# -- 6. network.lan of a running lab -----------------------------------------------------------


def test_changing_the_lan_is_refused_in_the_plan(tmp_path, labhome):
    def data(t):
        plan = schedule.plan(topology.load(t))
        return render.build(plan, LabDir(labhome / "x"))

    old, new = data(seed_as(tmp_path)), data(seed_as(tmp_path, lan="10.93.0.0/16"))
    d = reconcile.diff(old, new)
    (lab_change,) = [c for c in d.changes if c.kind == "lab"]
    assert lab_change.name == "network" and "10.92.0.0/16 -> 10.93.0.0/16" in lab_change.detail
    err = reconcile.refusal(d, "lchost")
    assert err is not None and err.exit_code == 2 and "labctl down" in err.hint
    # the gateway alone is the bridge's address: refused too
    gw = data(seed_as(tmp_path))
    gw = gw.model_copy(update={"network": gw.network.model_copy(update={"gateway": "10.92.0.254"})})
    assert reconcile.refusal(reconcile.diff(old, gw), "lchost") is not None
    assert reconcile.refusal(reconcile.diff(old, data(seed_as(tmp_path))), "lchost") is None


def test_up_and_dry_run_refuse_a_new_lan_alike(tmp_path, labhome):
    lab = fake_running(labhome, seed_as(tmp_path))
    moved = seed_as(tmp_path, lan="10.93.0.0/16")
    dry = invoke("up", "-t", moved, "--dry-run")
    assert dry.exit_code == 2, dry.output
    assert "~ lab network: lan 10.92.0.0/16 -> 10.93.0.0/16" in dry.stdout
    real = invoke("up", "-t", moved)
    assert real.exit_code == 2, real.output
    assert dry.stderr.splitlines()[-1] == real.stderr.splitlines()[-1]
    assert "cannot change network in place" in real.stderr and "`labctl down`, then `labctl up`" in real.stderr
    assert json.loads(lab.state.read_text())["phase"] == "ready"  # nothing touched


# -- 12. list, and the same checks in validate / up --dry-run / up ----------------------------


def test_list_has_a_header_and_json_and_csv(tmp_path, labhome):
    fake_running(labhome, seed_as(tmp_path))
    table = invoke("list")
    assert table.exit_code == 0, table.output
    head, row = table.stdout.splitlines()[:2]
    assert head.split() == ["NAME", "PROVIDER", "PHASE", "UPDATED"] and row.split()[:3] == ["lchost", "netns", "ready"]
    rows = json.loads(invoke("list", "--format", "json").stdout)
    assert [(r["name"], r["provider"], r["phase"]) for r in rows] == [("lchost", "netns", "ready")]
    csv = invoke("list", "-f", "csv").stdout.splitlines()
    assert csv[0] == "name,provider,phase,updated" and csv[1].startswith("lchost,netns,ready,")


@pytest.fixture
def arp_limit(tmp_path, monkeypatch):
    from labctl.providers.netns import checks as netns

    (tmp_path / "gc_thresh2").write_text("512\n")
    (tmp_path / "gc_thresh3").write_text("1024\n")
    monkeypatch.setattr(netns, "GC_THRESH3", tmp_path / "gc_thresh3")
    # a kernel that counts permanent neighbour entries against gc_thresh3 (< 4.19)
    monkeypatch.setattr(netns, "kernel_exempts_permanent", lambda: False)


def test_a_mesh_past_the_arp_limit_is_refused_by_validate_dry_run_and_up(tmp_path, labhome, arp_limit):
    t = tmp_path / "mesh.yml"
    t.write_text(generate.topology(40, 0, "lcmesh"))
    lines = set()
    for args in (["validate"], ["up", "--dry-run"], ["up"]):
        r = invoke(*args, "-t", t)
        assert r.exit_code == 1, (args, r.output)
        assert "neighbour entries, more than the host's neighbour table" in r.stderr and "Traceback" not in r.output
        lines.add(r.stderr.strip().splitlines()[-1])
    assert len(lines) == 1  # the same refusal, word for word
    assert not (labhome / "lcmesh").exists()


def test_a_lab_dir_too_deep_for_socket_paths_is_refused_by_all_three(tmp_path, monkeypatch):
    home = tmp_path / ("d" * 90)
    home.mkdir()
    monkeypatch.setenv("LABCTL_HOME", str(home))
    for args in (["validate"], ["up", "--dry-run"], ["up"]):
        r = invoke(*args, "-t", SEED)
        assert r.exit_code == 1, (args, r.output)
        assert "too deep for Unix socket paths" in r.stderr
    assert list(home.iterdir()) == []


def test_validate_still_accepts_a_mesh_within_the_limit(tmp_path, labhome, arp_limit):
    t = tmp_path / "small.yml"
    t.write_text(generate.topology(1, 0, "lcone"))
    r = invoke("validate", "-t", t)
    assert r.exit_code == 0, r.output
    assert ", 1 node, 1 workload" in r.stdout  # 13: not "1 nodes"


# -- 13. small ones ------------------------------------------------------------------------------


def test_a_fifo_as_topology_is_refused_at_once(tmp_path, labhome):
    fifo = tmp_path / "t.yml"
    os.mkfifo(fifo)
    for args in (["validate", "-t", fifo], ["up", "--dry-run", "-t", fifo], ["down", "-t", fifo]):
        p = labctl(*args, home=labhome, timeout=20)
        assert p.returncode == 2, p.stderr
        assert "not a regular file" in p.stderr


def test_down_of_an_unknown_lab_is_an_error_of_a_removed_one_not(tmp_path, labhome):
    fake_running(labhome, seed_as(tmp_path))
    r = invoke("down", "--name", "lchots")
    assert r.exit_code == 2, r.output
    assert "no lab 'lchots'" in r.stderr and "labs: lchost" in r.stderr
    # a lab dir that holds only a state (bootstrap never began) is removed without a provider
    (labhome / "lcpart").mkdir()
    (labhome / "lcpart" / "state.json").write_text("{}")
    assert invoke("down", "--name", "lcpart").exit_code == 0
    assert not (labhome / "lcpart").exists()
    again = invoke("down", "--name", "lcpart")
    assert again.exit_code == 0 and "already removed" in again.stderr
    assert invoke("down", "--name", "lcnever").exit_code == 2


def test_trace_to_itself_and_a_negative_wait_are_bad_input(labhome):
    r = invoke("trace", "pod-a", "pod-a")
    assert r.exit_code == 2 and "itself" in r.stderr, r.output
    r = invoke("verify", "--wait", "-5")
    assert r.exit_code == 2 and "--wait" in r.output, r.output


def test_help_shows_flags_without_a_value():
    for args in (["--help"], ["up", "--help"], ["down", "--help"]):
        r = invoke(*args)
        assert r.exit_code == 0
        assert "<bool>" not in r.stdout, r.stdout
    assert "--debug" in invoke("--help").stdout and "--dry-run" in invoke("up", "--help").stdout


def test_no_color_means_plain_usage_errors(labhome):
    env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="1", LABCTL_HOME=str(labhome))
    p = subprocess.run([sys.executable, "-m", "labctl", "up", "--bogus"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "No such option" in p.stderr
    assert "\x1b[" not in p.stderr, repr(p.stderr)


def test_debug_keeps_usage_errors_one_line_exit_2(labhome):
    for args in (["--debug", "inspect"], ["--debug", "down", "--name", "nope"], ["--debug", "up", "--bogus"]):
        p = labctl(*args, home=labhome)
        assert p.returncode == 2, (args, p.stderr)
        assert "Traceback" not in p.stderr
