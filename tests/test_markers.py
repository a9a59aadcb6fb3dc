"""conftest's rules, each run in a subprocess on a sample test file: every test is in exactly one tier
(none, or two, is an error before anything runs, also under `-m unit`); a missing tool skips a `netns`
or `qemu` test on a developer's machine, and is a strict xfail on CI (CI installs everything, so a skip
there would hide a broken setup), shown with a PATH that has the netns tools but not QEMU."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NETNS_TOOLS, ROOT

SAMPLE = """
import pytest

@pytest.mark.netns
def test_needs_namespaces():
    pass

@pytest.mark.qemu
def test_boots_a_vm():
    pass
"""


def run(tmp_path: Path, ci: bool, sample: str = SAMPLE, *args: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in NETNS_TOOLS:
        found = shutil.which(tool) or f"/usr/sbin/{tool}"
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(sample)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PATH": str(bin_dir)}
    if ci:
        env["CI"] = "1"
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsx", "-p", "no:cacheprovider", *args, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    return p.stdout + p.stderr


@pytest.mark.netns  # root: a non-root run skips both sample tests for "needs root"
def test_a_missing_qemu_is_a_strict_xfail_on_ci_and_a_skip_elsewhere(tmp_path):
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        raise AssertionError("needs root and QEMU installed (make qemu-deps), to take QEMU away from the PATH")
    on_ci = run(tmp_path, ci=True)
    assert "1 passed, 1 xfailed" in on_ci and "qemu prerequisites: missing qemu-system-x86_64" in on_ci, on_ci
    local = run(tmp_path, ci=False)
    assert "1 passed, 1 skipped" in local and "qemu test: missing qemu-system-x86_64" in local, local


TIERLESS = """
import pytest

pytestmark = pytest.mark.unit

def test_in_one_tier():
    pass

@pytest.mark.lint
def test_in_two():
    pass
"""


@pytest.mark.unit
def test_a_test_in_no_tier_or_in_two_is_an_error_before_anything_runs(tmp_path):
    no_tier = TIERLESS.replace("pytestmark = pytest.mark.unit", "")
    for sample, args, bad in [
        (TIERLESS, (), "test_sample.py::test_in_two: tiers lint and unit"),
        (no_tier, ("-m", "unit"), "test_sample.py::test_in_one_tier: no tier"),
    ]:
        out = run(tmp_path, False, sample, *args)
        assert "every test needs exactly one tier marker" in out and bad in out, out
        assert "passed" not in out and "deselected" not in out, out
