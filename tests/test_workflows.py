"""Both GitHub workflows (issue 21 items 5, 11): linted by zizmor (offline audits) and validated
against the GitHub workflow schema that check-jsonschema vendors (`make lint` runs both too); every
step has a timeout and the job's covers their sum; smoke-local's teardown makes the root-owned logs
readable even when `labctl down` fails, and its VMs are sized to the runner's memory."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
LOCAL = ROOT / ".github" / "workflows" / "smoke-local.yml"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name) or str(BIN / name)
    assert Path(path).exists(), f"{name} is in the test extra (pip install -e '.[test]')"
    return path


@pytest.mark.unit
def test_there_are_both_workflows():
    assert {w.name for w in WORKFLOWS} == {"smoke-cloud.yml", "smoke-local.yml"}


@pytest.mark.lint
def test_zizmor_finds_nothing():
    p = subprocess.run([tool("zizmor"), "--offline", *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No findings to report" in p.stdout + p.stderr


@pytest.mark.lint
def test_the_workflows_match_githubs_schema():
    argv = [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)]
    p = subprocess.run(argv, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.unit
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_the_job_outlasts_its_steps(workflow):
    job = yaml.safe_load(workflow.read_text())["jobs"]["smoke"]
    missing = [s["name"] for s in job["steps"] if "timeout-minutes" not in s]
    assert not missing, f"steps without their own timeout: {missing}"
    total = sum(s["timeout-minutes"] for s in job["steps"])
    assert job["timeout-minutes"] >= total, f"job {job['timeout-minutes']} min < steps {total} min"


def step(name: str) -> dict:
    return next(s for s in yaml.safe_load(LOCAL.read_text())["jobs"]["smoke"]["steps"] if s["name"].startswith(name))


@pytest.mark.unit
def test_a_failing_down_still_leaves_the_logs_readable(tmp_path):
    """Run the teardown step as GitHub does (bash -eo pipefail) with a `labctl` whose down fails."""
    home, art = tmp_path / "labs", tmp_path / "artifacts"
    logs = home / "seed-qemu" / "logs"
    logs.mkdir(parents=True)
    (logs / "up.log").write_text("TASK ...\n")
    os.chmod(logs / "up.log", 0o600)
    fake = tmp_path / "labctl"
    fake.write_text("#!/bin/sh\necho 'labctl: error: teardown incomplete' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = dict(os.environ, LABCTL=str(fake), LABCTL_HOME=str(home), SMOKE_ARTIFACTS=str(art), TOPOLOGY="t.yml")
    p = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step("Collect logs")["run"]],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr  # the failure is still the step's
    assert "teardown incomplete" in (art / "down.log").read_text()
    assert (art / "logs" / "up.log").stat().st_mode & 0o004  # readable by the uploader


def _size(tmp_path, avail_kib: int) -> subprocess.CompletedProcess:
    script = re.search(r"<<'PY'\n(.*?)\n\s*PY\n", step("Size the VMs")["run"], re.S).group(1)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 7000000 kB\nMemAvailable: {avail_kib} kB\n")
    src = ROOT / "inventories" / "seed-qemu" / "topology.yml"
    env = dict(os.environ, MEMINFO=str(meminfo))
    return subprocess.run(
        [sys.executable, "-c", script, str(src), str(tmp_path / "sized.yml")], capture_output=True, text=True, env=env
    )


@pytest.mark.unit
def test_the_vms_are_sized_to_the_runner(tmp_path):
    """A 7 GB runner (~6.2 GB available): 2048 MiB for the control plane, 1280 for each worker, which
    labctl's preflight then finds fitting; a 16 GB runner gets 2048 each; too little fails naming it."""
    from labctl.providers.qemu import machine

    for avail, worker in ((6_300_000, 1280), (15_000_000, 2048)):
        p = _size(tmp_path, avail)
        assert p.returncode == 0, p.stderr
        t = yaml.safe_load((tmp_path / "sized.yml").read_text())
        assert t["qemu"]["control_plane"]["memory"] == 2048 and t["qemu"]["worker"]["memory"] == worker, t["qemu"]
        vms = {
            n: t["qemu"]["worker" if d["role"] == "worker" else "control_plane"]["memory"]
            for n, d in t["nodes"].items()
        }
        assert machine.memory_shortfall(vms, f"MemAvailable: {avail} kB\n") is None
    # three 2 GiB VMs, as the sample topology has them, do not fit on the 7 GB runner
    seed = yaml.safe_load((ROOT / "inventories" / "seed-qemu" / "topology.yml").read_text())
    assert machine.memory_shortfall({n: 2048 for n in seed["nodes"]}, "MemAvailable: 6300000 kB\n")
    p = _size(tmp_path, 4_000_000)
    assert p.returncode == 1 and "3906 MiB available: too little" in p.stderr, p.stderr


@pytest.mark.unit
def test_the_smoke_run_verifies_with_dns_and_traces_after_up():
    names = [s["name"] for s in yaml.safe_load(LOCAL.read_text())["jobs"]["smoke"]["steps"]]
    assert names.index("Size the VMs to the runner") < names.index("labctl up") < names.index("labctl verify")
    assert "labctl trace pod-a pod-b" in names
    assert "preflight_min_memory_mb=1024" in step("labctl up")["run"]
    assert "dnsmasq-base" in step("Install QEMU")["run"]
