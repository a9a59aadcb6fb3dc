#!/usr/bin/env python3
"""Time `labctl up` + `labctl verify` of the seed lab on one LAN against the same three nodes in two
racks behind a router (inventories/two-racks: IPIPCrossSubnet, bgp: tor), alternating, in one run.

    sudo .venv/bin/python bench/racks.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
from pathlib import Path

from _util import lab_env, timed

ROOT = Path(__file__).resolve().parent.parent
LABS = {
    "one LAN (seed)": ROOT / "inventories/seed/topology.yml",
    "two racks": ROOT / "inventories/two-racks/topology.yml",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work, env, labctl = lab_env()
    took: dict[str, list[float]] = {k: [] for k in LABS}
    try:
        for _ in range(args.runs):
            for name, topo in LABS.items():
                up = timed(labctl + ["up", "-t", str(topo)], env)
                verify = timed(labctl + ["verify", "--wait", "5"], env)
                took[name].append(up + verify)
                timed(labctl + ["down", "-t", str(topo)], env)
    finally:
        for topo in LABS.values():
            subprocess.run(labctl + ["down", "-t", str(topo)], capture_output=True, env=env)
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in took.items()}
    print(f"runs: {args.runs} (medians of up + verify)")
    for k, v in took.items():
        print(f"{k + ':':<20} {med[k]:6.2f} s   {' '.join(f'{x:.2f}' for x in v)}")
    print(f"two racks / one LAN: {med['two racks'] / med['one LAN (seed)']:.2f}x (target: within 1.5x)")


if __name__ == "__main__":
    main()
