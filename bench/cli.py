#!/usr/bin/env python3
"""CLI speed: `labctl --help` start-up (heavy modules are imported lazily) and rendering a
1000-node topology (route reflectors; a full mesh of 1000 would be a million BIRD sessions).

    .venv/bin/python bench/cli.py [--runs 5]"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    labctl = [sys.executable, "-m", "labctl"]
    work = Path(tempfile.mkdtemp(prefix="lcc"))
    try:
        topo = work / "n1000.yml"
        subprocess.run(
            labctl + ["init", "--nodes", "1000", "--route-reflectors", "2", "-o", str(topo)],
            check=True,
            capture_output=True,
        )
        helps = [timed(labctl + ["--help"]) for _ in range(args.runs)]
        renders = [timed(labctl + ["render", "-t", str(topo), "-o", str(work / "lab")]) for _ in range(args.runs)]
        validates = [timed(labctl + ["validate", "-t", str(topo)]) for _ in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, xs, target in (
        ("labctl --help", helps, 0.25),
        ("render 1000 nodes", renders, 2.0),
        ("validate 1000 nodes", validates, None),
    ):
        goal = f"target <= {target} s" if target else ""
        print(f"{name:<22} median {statistics.median(xs):6.3f} s   min {min(xs):6.3f} s   {goal}")


if __name__ == "__main__":
    main()
