"""What the benchmarks share (they run as scripts: `python bench/up.py` finds this module beside them)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str], env: dict | None = None) -> float:
    """Seconds `argv` took; a failing command ends the benchmark with its output."""
    start = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return took


def lab_env() -> tuple[Path, dict, list[str]]:
    """A fresh work dir (short: sockets live under it), the env whose LABCTL_HOME is inside it, labctl's argv."""
    work = Path(tempfile.mkdtemp(prefix="lcb", dir="/tmp"))
    return work, dict(os.environ, LABCTL_HOME=str(work / "h")), [sys.executable, "-m", "labctl"]
