"""CLI arguments and exit codes. ansible-runner is stubbed here (and only here): these tests
are about what the commands pass on and print, not about provisioning."""

import json

import pytest
from typer.testing import CliRunner

from conftest import ROOT, SEED
from labctl import cli
from labctl.live import hostkeys
from labctl.outputs import runner

pytestmark = pytest.mark.unit

VM = ROOT / "inventories/vm-cloud/topology.yml"


@pytest.fixture
def calls(monkeypatch, labhome):
    seen = []

    def fake(lab, playbook, progress, extravars=None, check=False, limit=None, cancel=None, tags=None):
        seen.append({"playbook": playbook, "check": check, "inventory": lab.inventory.is_file()})
        seen[-1].update({k: v for k, v in (("tags", tags), ("extravars", extravars)) if v})
        progress.phase("stubbed play")
        return runner.Result("successful", 0, {"k8s-master": 1})

    monkeypatch.setattr(runner, "run_playbook", fake)
    monkeypatch.setattr(hostkeys, "pin", lambda nodes, known_hosts, accept_new: [])
    return seen


def invoke(*args, **env):
    return CliRunner().invoke(cli.app, [str(a) for a in args], env=env or None)


def test_up_check_passes_check_mode_to_the_vm_playbook(calls, labhome):
    r = invoke("up", "-t", VM, "--check")
    assert r.exit_code == 0, r.output
    assert calls == [{"playbook": "vm-up.yml", "check": True, "inventory": True}]
    state = json.loads((labhome / "seed-vm" / "state.json").read_text())
    assert state["provider"] == "vm"


def test_up_flags_reach_the_runner(calls, labhome):
    r = invoke("up", "-t", VM, "--tags", "preflight,host_prep", "-e", "preflight_min_cpus=1")
    assert r.exit_code == 0, r.output
    assert calls[0]["tags"] == "preflight,host_prep"
    assert calls[0]["extravars"] == {"preflight_min_cpus": 1}


def test_up_then_down_runs_the_reset_playbook(calls, labhome):
    assert invoke("up", "-t", VM).exit_code == 0
    r = invoke("down", "--name", "seed-vm", "--purge")
    assert r.exit_code == 0, r.output
    assert [c["playbook"] for c in calls] == ["vm-up.yml", "vm-down.yml"]
    assert calls[1]["extravars"] == {"labctl_purge": True}
    assert not (labhome / "seed-vm").exists()
    again = invoke("down", "--name", "seed-vm")
    assert again.exit_code == 0


def test_up_progress_and_summary_go_to_stderr(calls, labhome):
    r = CliRunner().invoke(cli.app, ["up", "-t", str(VM)])
    assert "==> Running phase: preflight" in r.stderr
    assert "==> Running phase: stubbed play" in r.stderr
    assert r.stdout == ""


def test_no_color_means_no_escape_sequences(calls, labhome):
    r = CliRunner().invoke(cli.app, ["up", "-t", str(VM)], env={"NO_COLOR": "1", "FORCE_COLOR": "1"})
    assert r.exit_code == 0
    assert "\x1b[" not in r.stderr


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["up", "-t", "/nonexistent.yml"], 2, "cannot read"),
        (["validate", "-t", "/nonexistent.yml"], 2, "cannot read"),
        (["inspect", "--format", "xml"], 2, "xml"),
        (["verify", "--format", "csv"], 2, "csv"),
        (["inspect"], 2, "no lab"),
        (["verify", "--name", "nope"], 2, "does not exist"),
        (["exec", "--name", "nope", "n1", "--", "true"], 2, "does not exist"),
        (["frobnicate"], 2, "No such command"),
        (["up", "--bogus"], 2, "No such option"),
    ],
)
def test_bad_input_exits_2_without_traceback(labhome, args, code, words):
    r = invoke(*args)
    assert r.exit_code == code, r.output
    assert words in r.output
    assert "Traceback" not in r.output


def test_several_labs_need_a_name(calls, labhome):
    assert invoke("up", "-t", VM).exit_code == 0
    (labhome / "other").mkdir()
    (labhome / "other" / "state.json").write_text("{}")
    r = invoke("inspect")
    assert r.exit_code == 2 and "several labs" in r.output and "--name" in r.output


def test_exec_unknown_node_lists_the_nodes(calls, labhome):
    assert invoke("up", "-t", VM).exit_code == 0
    r = invoke("exec", "nope", "--", "true")
    assert r.exit_code == 2
    assert "k8s-master" in r.output and "k8s-worker-1" in r.output


def test_version_and_help():
    assert invoke("--version").output.strip().startswith("labctl ")
    r = invoke("--help")
    for cmd in ("validate", "render", "up", "down", "inspect", "verify", "graph", "exec", "schema"):
        assert cmd in r.output


def test_debug_shows_the_traceback(labhome, monkeypatch):
    from labctl.app.lab import Lab
    from labctl.errors import HostError

    def broken(*a, **k):
        raise HostError("boom")

    monkeypatch.setattr(Lab, "find", broken)
    r = invoke("--debug", "inspect")
    assert r.exit_code == 1 and isinstance(r.exception, HostError)  # bad input stays exit 2, one line


def test_default_topology_is_the_seed(calls, labhome):
    r = invoke("validate")
    assert r.exit_code == 0 and "lab seed" in r.output
    assert SEED.is_file()


def test_a_failed_raw_task_is_reported_by_its_own_words_not_ssh_noise():
    from labctl.outputs import runner

    res = {
        "rc": 1,
        "msg": "non-zero return code",
        "stderr": "Shared connection to 10.12.22.10 closed.\r\n",
        "stdout": "BIRD 2.0.12 ready.\nonly 3 of 49 BGP sessions Established after 30 s\r\n",
    }
    assert runner._message(res) == "only 3 of 49 BGP sessions Established after 30 s"
    assert runner._message({"rc": 2, "stderr": "ip: RTNETLINK answers: File exists\n"}) == (
        "ip: RTNETLINK answers: File exists"
    )


def test_a_bug_is_one_line_and_exit_1_and_its_traceback_comes_with_debug(monkeypatch):
    from labctl.cli import lifecycle

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(lifecycle, "load_topology", boom)
    monkeypatch.setattr(cli, "_debug", False)  # --debug below sets it; restored after the test
    r = CliRunner().invoke(cli.app, ["validate", "-t", str(SEED)])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip().splitlines() == [
        "labctl: error: internal error: RuntimeError: boom (hint: a bug in labctl: run again with --debug and report the traceback)"
    ]
    r = CliRunner().invoke(cli.app, ["--debug", "validate", "-t", str(SEED)])
    assert isinstance(r.exception, RuntimeError)
