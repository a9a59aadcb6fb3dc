#!/usr/bin/env python3
"""Time `labctl up` + `labctl verify` on the seed lab against bench/floor.sh (plain shell: the same
namespaces, BIRD mesh and pods, up to a pod-to-pod ping), in one run, and print the ratio.

    sudo .venv/bin/python bench/up.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
from pathlib import Path

from _util import lab_env, timed

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "inventories/seed/topology.yml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work, env, labctl = lab_env()
    floor, ours, ups = [], [], []
    try:
        for _ in range(args.runs):
            floor.append(timed(["bash", str(ROOT / "bench/floor.sh"), "up", str(work / "floor")]))
            timed(["bash", str(ROOT / "bench/floor.sh"), "down", str(work / "floor")])
            up = timed(labctl + ["up", "-t", str(SEED)], env)
            verify = timed(labctl + ["verify", "--wait", "0"], env)
            ups.append(up)
            ours.append(up + verify)
            timed(labctl + ["down"], env)
    finally:
        subprocess.run(["bash", str(ROOT / "bench/floor.sh"), "down", str(work / "floor")], capture_output=True)
        subprocess.run(labctl + ["down", "-t", str(SEED)], capture_output=True, env=env)
        shutil.rmtree(work, ignore_errors=True)
    f, o = statistics.median(floor), statistics.median(ours)
    print(f"runs: {args.runs} (medians)")
    print(f"floor (plain shell, bench/floor.sh):  {f:6.2f} s   {' '.join(f'{x:.2f}' for x in floor)}")
    print(
        f"labctl up:                            {statistics.median(ups):6.2f} s   {' '.join(f'{x:.2f}' for x in ups)}"
    )
    print(f"labctl up + verify:                   {o:6.2f} s   {' '.join(f'{x:.2f}' for x in ours)}")
    print(f"ratio (labctl up+verify / floor):     {o / f:6.2f}   target <= 2.5; absolute target <= 12 s")


if __name__ == "__main__":
    main()
