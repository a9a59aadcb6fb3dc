"""The cloud smoke workflow (issue 11 item 17): its teardown is never cut off by the job's own
timeout, and the host addresses stay out of both the console and the uploaded files."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.unit

WORKFLOW = ROOT / ".github" / "workflows" / "smoke-cloud.yml"


def steps() -> tuple[dict, list[dict]]:
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["smoke"]
    return job, job["steps"]


def index(name_part: str) -> int:
    return next(i for i, s in enumerate(steps()[1]) if name_part in s["name"])


def test_job_timeout_covers_every_step_including_teardown():
    job, all_steps = steps()
    missing = [s["name"] for s in all_steps if "timeout-minutes" not in s]
    assert not missing, f"steps without their own timeout: {missing}"
    total = sum(s["timeout-minutes"] for s in all_steps)
    assert job["timeout-minutes"] >= total, f"job {job['timeout-minutes']} min < steps {total} min"


def test_addresses_are_masked_before_any_step_prints_them():
    _, all_steps = steps()
    mask = index("Generate the topology")
    assert "::add-mask::" in all_steps[mask]["run"]
    assert '"$jump_host"' in all_steps[mask]["run"]  # the bastion also without user@ and :port
    assert mask < index("Validate the topology") < index("labctl up")


def _scrub_script() -> str:
    run = steps()[1][index("Mask the host addresses")]["run"]
    return re.search(r"<<'PY'\n(.*?)\nPY", run, re.S).group(1)


def test_uploaded_logs_have_the_addresses_replaced(tmp_path):
    _, all_steps = steps()
    assert index("Collect logs") < index("Mask the host addresses") < index("Upload logs")
    assert all_steps[index("Mask the host addresses")]["if"] == "always()"
    logs = tmp_path / "smoke-artifacts" / "logs"
    logs.mkdir(parents=True)
    (logs / "up.log").write_text(
        "TASK Wait for SSH\nok: [k8s-master] 203.0.113.10 via ubuntu@bastion.example.net:2222\n"
        "k8s-worker-1 203.0.113.11 / 203.0.113.111 stays\nProxyJump bastion.example.net\n"
    )
    (tmp_path / "smoke-artifacts" / "verify.json").write_text('{"address": "203.0.113.12"}')
    env = dict(
        os.environ,
        LABCTL_HOSTS="203.0.113.10, 203.0.113.11,203.0.113.12",
        LABCTL_SSH_JUMP="ubuntu@bastion.example.net:2222",
    )
    p = subprocess.run(
        [sys.executable, "-", str(tmp_path / "smoke-artifacts")],
        input=_scrub_script(),
        text=True,
        capture_output=True,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    up = (logs / "up.log").read_text()
    for secret in ("203.0.113.10", "203.0.113.11 ", "bastion.example.net", "203.0.113.12"):
        assert secret not in up, up
    assert "203.0.113.111" in up  # a longer address that merely starts with a host's is left alone
    assert "<host-" in up and "TASK Wait for SSH" in up
    assert "203.0.113.12" not in (tmp_path / "smoke-artifacts" / "verify.json").read_text()
