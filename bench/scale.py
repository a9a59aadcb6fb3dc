#!/usr/bin/env python3
"""Scale: `labctl up`, `verify` and `down` times and memory per node for generated labs, full mesh
against route reflectors.

    sudo .venv/bin/python bench/scale.py [--sizes 3,20,50,100] [--reflectors 2] [--mesh-up-to 100] [--neigh-limit 16384]

A full mesh has n*(n-1) BGP session ends, each resolving its peer in the kernel's ARP table, which is
one for all namespaces and capped by the host's net.ipv4.neigh.default.gc_thresh3 (1024 by default):
`labctl up` refuses a mesh past ~30 nodes for that reason. --neigh-limit N raises gc_thresh2/3 for the
run (and restores them after), to measure big meshes; meshes are built up to --mesh-up-to nodes."""

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
    ap.add_argument("--sizes", default="3,20,50,100")
    ap.add_argument("--reflectors", type=int, default=2)
    ap.add_argument("--mesh-up-to", type=int, default=100)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--neigh-limit", type=int, default=0, help="gc_thresh3 for the run (gc_thresh2 = half)")
    args = ap.parse_args()
    sysctl = Path("/proc/sys/net/ipv4/neigh/default")
    saved = {k: (sysctl / k).read_text() for k in ("gc_thresh2", "gc_thresh3")}
    if args.neigh_limit:
        (sysctl / "gc_thresh3").write_text(str(args.neigh_limit))
        (sysctl / "gc_thresh2").write_text(str(args.neigh_limit // 2))
    work = Path(tempfile.mkdtemp(prefix="lcsc", dir="/tmp"))
    env = dict(os.environ, LABCTL_HOME=str(work / "h"), NO_COLOR="1")
    labctl = [sys.executable, "-m", "labctl"]
    print(f"{'nodes':>5} {'bgp':<6} {'up s':>7} {'verify s':>9} {'down s':>7} {'MB/node':>8}  result")
    try:
        for n in map(int, args.sizes.split(",")):
            for rr in (0, args.reflectors):
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
                print(f"{n:>5} {kind:<6} {up:7.1f} {ver:9.1f} {down:7.1f} {per_node:8.1f}  {result}", flush=True)
    finally:
        subprocess.run(labctl + ["down", "--name", "scale"], capture_output=True, env=env)
        shutil.rmtree(work, ignore_errors=True)
        for k, v in saved.items():
            (sysctl / k).write_text(v)


if __name__ == "__main__":
    main()
