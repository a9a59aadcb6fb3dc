#!/usr/bin/env python3
"""Scale: `labctl up`, `verify` and `down` times and memory per node for generated labs, full mesh
against route reflectors.

    sudo .venv/bin/python bench/scale.py [--sizes 3,20,50,100,250] [--reflectors K] [--mesh-up-to 100]

Reflectors: K if given, else 2 up to 100 nodes and 4 past that (`labctl init --nodes 250
--route-reflectors 4`). A full mesh has n*(n-1) BGP session ends against about two per node with
reflectors; meshes are built up to --mesh-up-to nodes (a 250-node mesh is 62250 session ends).
No host setting is needed at any size: every neighbour a lab uses is a permanent entry, which the
kernel (>= 4.19) keeps out of the host's gc_thresh count (README, "Size"). The host's load is
printed with each row: on a shared machine the times follow it."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mem_used_mb() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kb = lambda k: int(info[k].split()[0])  # noqa: E731
    return (kb("MemTotal") - kb("MemAvailable")) / 1024


def run(argv, env, timeout) -> tuple[float, bool, str]:
    start = time.perf_counter()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        ok, tail = p.returncode == 0, (p.stdout + p.stderr).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        ok, tail = False, ["timed out"]
    return time.perf_counter() - start, ok, " ".join(tail)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="3,20,50,100,250")
    ap.add_argument("--reflectors", type=int, default=0, help="default: 2 up to 100 nodes, 4 past that")
    ap.add_argument("--mesh-up-to", type=int, default=100)
    ap.add_argument("--timeout", type=int, default=900)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lcsc", dir="/tmp"))
    env = dict(os.environ, LABCTL_HOME=str(work / "h"), NO_COLOR="1")
    labctl = [sys.executable, "-m", "labctl"]
    print(f"{'nodes':>5} {'bgp':<6} {'up s':>7} {'verify s':>9} {'down s':>7} {'MB/node':>8} {'load':>5}  result")
    try:
        for n in map(int, args.sizes.split(",")):
            for rr in (0, args.reflectors or (2 if n <= 100 else 4)):
                if (rr == 0 and n > args.mesh_up_to) or rr >= n:
                    continue
                topo = work / f"n{n}-rr{rr}.yml"
                gen = labctl + [
                    "init",
                    "--nodes",
                    str(n),
                    "--route-reflectors",
                    str(rr),
                    "--name",
                    "scale",
                    "-o",
                    str(topo),
                ]
                subprocess.run(gen, check=True, capture_output=True, env=env)
                before = mem_used_mb()
                up, ok_up, msg = run(labctl + ["up", "-t", str(topo)], env, args.timeout)
                per_node = (mem_used_mb() - before) / n
                ver, ok_ver, vmsg = (
                    run(labctl + ["verify", "--wait", "30"], env, args.timeout) if ok_up else (0, False, "")
                )
                down, ok_down, _ = run(labctl + ["down", "-t", str(topo)], env, args.timeout)
                result = "ok" if ok_up and ok_ver and ok_down else f"FAILED: {msg if not ok_up else vmsg}"
                kind = f"rr{rr}" if rr else "mesh"
                load = os.getloadavg()[0]
                print(
                    f"{n:>5} {kind:<6} {up:7.1f} {ver:9.1f} {down:7.1f} {per_node:8.1f} {load:5.1f}  {result}",
                    flush=True,
                )
    finally:
        subprocess.run(labctl + ["down", "--name", "scale"], capture_output=True, env=env)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
