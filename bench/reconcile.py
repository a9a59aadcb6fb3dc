#!/usr/bin/env python3
"""Reconcile timings: full `up` of a lab, then adding a worker, relabelling one, removing one,
against a full `up` of the grown lab from scratch. The seed lab by default; --nodes N generates an
N-node lab with `labctl init` (what any `up` pays, even one that changes nothing, shows as "no change").

    sudo .venv/bin/python bench/reconcile.py [--nodes 20] [--reflectors 2]"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "inventories/seed/topology.yml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3, help="3: the seed lab; more: a generated lab")
    ap.add_argument("--reflectors", type=int, default=0)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lcr", dir="/tmp"))
    env = dict(os.environ, LABCTL_HOME=str(work / "h"), NO_COLOR="1")
    base = SEED
    if a.nodes != 3 or a.reflectors:
        base = work / "base.yml"
        init = [sys.executable, "-m", "labctl", "init", "--nodes", str(a.nodes), "-n", "rcb", "-o", str(base)]
        subprocess.run([*init, "--route-reflectors", str(a.reflectors)], check=True, env=env)
    d = yaml.safe_load(base.read_text())
    n = len(d["nodes"])
    d["nodes"][f"k8s-worker-{n}"] = {"role": "worker", "address": f"10.12.22.{n + 1}", "labels": {"worker": f"no-{n}"}}
    d.setdefault("workloads", []).append({"name": "pod-new", "node_selector": {"worker": f"no-{n}"}})
    grown = work / "grown.yml"
    grown.write_text(yaml.safe_dump(d, sort_keys=False))
    d["nodes"][f"k8s-worker-{n}"]["labels"] = {"worker": f"no-{n}", "disk": "ssd"}
    relabel = work / "relabel.yml"
    relabel.write_text(yaml.safe_dump(d, sort_keys=False))

    def t(*argv: str) -> float:
        start = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "labctl", *argv], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f"labctl {' '.join(argv)} failed:\n{p.stderr}")
        return time.perf_counter() - start

    try:
        rows = [
            (f"full up, {n} nodes", t("up", "-t", str(base))),
            (f"add a worker ({n} -> {n + 1})", t("up", "-t", str(grown))),
            ("relabel one worker", t("up", "-t", str(relabel))),
            (f"remove the worker ({n + 1} -> {n})", t("up", "-t", str(base))),
            ("no change (converge, repairs drift)", t("up", "-t", str(base))),
        ]
        t("down", "-t", str(base))
        full = t("up", "-t", str(grown))
        down = t("down", "-t", str(base))
        rows.append((f"redeploy instead: down + up, {n + 1} nodes", down + full))
        rows.append((f"full up from scratch, {n + 1} nodes", full))
    finally:
        subprocess.run([sys.executable, "-m", "labctl", "down", "-t", str(base)], capture_output=True, env=env)
        shutil.rmtree(work, ignore_errors=True)
    full4 = rows[-1][1]
    for name, secs in rows:
        print(f"{name:<38} {secs:6.2f} s   {secs / full4:5.2f} of a full {n + 1}-node up")


if __name__ == "__main__":
    main()
