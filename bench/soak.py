#!/usr/bin/env python3
"""Soak: N cycles of `labctl up` -> `verify` -> `down` of the seed lab, then what leaked.

    sudo .venv/bin/python bench/soak.py [--cycles 20]

Leaks counted after each cycle against before the first: network namespaces, links, processes
that name the lab home, system-wide open files, and anything left in the lab home."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labctl.plan import names

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEED = ROOT / "inventories/seed/topology.yml"


def snapshot(home: Path) -> dict:
    """Only what this lab could leave (other labs may come and go meanwhile)."""

    ns = [
        x
        for x in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
        if x.startswith("lc-seed.")
    ]
    links = [
        x
        for x in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
        if names.lab_id("lc", "seed") in x
    ]
    procs = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            procs += str(home) in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            pass
    files = int(Path("/proc/sys/fs/file-nr").read_text().split()[0])
    debris = sum(1 for _ in home.rglob("*")) if home.exists() else 0
    return {"netns": len(ns), "links": len(links), "processes": procs, "open files": files, "lab-dir debris": debris}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lcs", dir="/tmp"))
    env = dict(os.environ, LABCTL_HOME=str(home), NO_COLOR="1")
    labctl = [sys.executable, "-m", "labctl"]
    base = snapshot(home)
    times: dict[str, list[float]] = {"up": [], "verify": [], "down": []}
    failures = 0
    try:
        for i in range(args.cycles):
            for step, argv in (("up", ["up", "-t", str(SEED)]), ("verify", ["verify"]), ("down", ["down"])):
                start = time.perf_counter()
                p = subprocess.run(labctl + argv, capture_output=True, text=True, env=env)
                times[step].append(time.perf_counter() - start)
                if p.returncode != 0:
                    failures += 1
                    print(f"cycle {i + 1}: {step} failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
            now = snapshot(home)
            leaks = {k: now[k] - base[k] for k in base if k != "open files" and now[k] != base[k]}
            print(
                f"cycle {i + 1:2}: up {times['up'][-1]:.2f}s verify {times['verify'][-1]:.2f}s "
                f"down {times['down'][-1]:.2f}s  leaks {leaks or 'none'}",
                flush=True,
            )
    finally:
        subprocess.run(labctl + ["down", "-t", str(SEED)], capture_output=True, env=env)
    end = snapshot(home)
    shutil.rmtree(home, ignore_errors=True)
    print(f"\n{args.cycles} cycles, {failures} failed steps")
    for step, xs in times.items():
        print(f"{step:<7} median {statistics.median(xs):.2f}s  max {max(xs):.2f}s")
    print("leaks after the last cycle (0 expected; open files is system-wide, other processes move it):")
    for k in base:
        print(f"  {k:<15} {end[k] - base[k]:+d}")


if __name__ == "__main__":
    main()
