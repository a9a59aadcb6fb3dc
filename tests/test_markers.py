"""conftest's rule for tests that need tools of the host: a missing tool skips a `netns` or `qemu`
test on a developer's machine, and is a strict xfail on CI (CI installs everything, so a skip there
would hide a broken setup). Run in a subprocess with a PATH that has the netns tools but not QEMU."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import NETNS_TOOLS, ROOT

SAMPLE = """
import pytest

@pytest.mark.netns
def test_needs_namespaces():
    pass

@pytest.mark.qemu
@pytest.mark.netns
def test_boots_a_vm():
    pass
"""


def run(tmp_path: Path, ci: bool) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in NETNS_TOOLS:
        found = shutil.which(tool) or f"/usr/sbin/{tool}"
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PATH": str(bin_dir)}
    if ci:
        env["CI"] = "1"
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsx", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    return p.stdout + p.stderr


def test_a_missing_qemu_is_a_strict_xfail_on_ci_and_a_skip_elsewhere(tmp_path):
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        raise AssertionError("needs root and QEMU installed (make qemu-deps), to take QEMU away from the PATH")
    on_ci = run(tmp_path, ci=True)
    assert "1 passed, 1 xfailed" in on_ci and "qemu prerequisites: missing qemu-system-x86_64" in on_ci, on_ci
    local = run(tmp_path, ci=False)
    assert "1 passed, 1 skipped" in local and "qemu test: missing qemu-system-x86_64" in local, local
