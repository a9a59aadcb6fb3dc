#!/usr/bin/env python3
"""Reconcile timings: full `up` of the seed lab, then adding a worker, relabelling one, removing
one, against a full `up` of the 4-node lab from scratch.

    sudo .venv/bin/python bench/reconcile.py"""

from __future__ import annotations

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
    work = Path(tempfile.mkdtemp(prefix="lcr", dir="/tmp"))
    env = dict(os.environ, LABCTL_HOME=str(work / "h"), NO_COLOR="1")
    d = yaml.safe_load(SEED.read_text())
    d["nodes"]["k8s-worker-3"] = {"role": "worker", "address": "10.12.22.4", "labels": {"worker": "no-3"}}
    d["workloads"].append({"name": "pod-c", "node_selector": {"worker": "no-3"}})
    four = work / "four.yml"
    four.write_text(yaml.safe_dump(d, sort_keys=False))
    d["nodes"]["k8s-worker-3"]["labels"] = {"worker": "no-3", "disk": "ssd"}
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
            ("full up, seed (3 nodes)", t("up", "-t", str(SEED))),
            ("add a worker (3 -> 4)", t("up", "-t", str(four))),
            ("relabel one worker", t("up", "-t", str(relabel))),
            ("remove the worker (4 -> 3)", t("up", "-t", str(SEED))),
            ("no change (converge, repairs drift)", t("up", "-t", str(SEED))),
        ]
        t("down")
        rows.append(("full up from scratch, 4 nodes", t("up", "-t", str(four))))
        t("down")
    finally:
        subprocess.run([sys.executable, "-m", "labctl", "down", "-t", str(SEED)], capture_output=True, env=env)
        shutil.rmtree(work, ignore_errors=True)
    full4 = rows[-1][1]
    for name, secs in rows:
        print(f"{name:<38} {secs:6.2f} s   {secs / full4:5.2f} of a full 4-node up")


if __name__ == "__main__":
    main()
