#!/usr/bin/env python3
"""`labctl view`: how fast the page loads and how fresh it stays, on the seed lab and a big reflector lab.

    sudo /work/wt/sandbox.sh .venv/bin/python bench/view.py [--nodes 100] [--reflectors 2] [--samples 8]

(on a shared machine inside a network sandbox; on a machine of its own `sudo .venv/bin/python
bench/view.py`). For each lab: `up`, `labctl view`, then
  read s      the server's read of the whole lab (inspect's read of every node and router, in parallel),
              as each snapshot reports it: how old the newest data can be when a page polls
  period s    time between two new snapshots (the read plus the wait to its 1 s cadence)
  api ms      one GET /api/state (the page's poll: the newest snapshot, never a read)
  load ms     headless chromium, navigation start to the lab first drawn (median of 3 fresh loads)
  draw ms     the page updating its drawing and tables from one poll (median)
and `down`. Prints one row per lab with the host's load average."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _util import lab_env

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import chromium  # noqa: E402 - the tests' browser, one way to start it


def get_state(port: int, token: str) -> tuple[float, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.perf_counter()
    c.request("GET", f"/api/state?token={token}")
    body = c.getresponse().read()
    took = time.perf_counter() - start
    c.close()
    return took, json.loads(body)


def measure(argv: list[str], env: dict, samples: int) -> dict:
    p = subprocess.Popen(argv + ["view"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = p.stdout.readline().strip()
        port, token = int(url.split(":")[2].split("/")[0]), url.split("token=")[1]
        api, reads, times = [], [], []
        while len(times) < samples + 1:
            took, snap = get_state(port, token)
            api.append(took)
            if not times or snap["time"] != times[-1]:
                times.append(snap["time"])
                reads.append(snap["took"])
            time.sleep(0.1)
        with chromium() as d:
            loads, draws = [], []
            for _ in range(3):
                d.get(url)
                deadline = time.monotonic() + 60
                while not (v := d.execute_script("return window.labview && window.labview.drawn")):
                    if time.monotonic() > deadline:
                        sys.exit(f"the page did not draw the lab in 60 s: {url}")
                    time.sleep(0.05)
                loads.append(v)
            deadline = time.monotonic() + 30
            while len(draws) < 3 and time.monotonic() < deadline:
                draws = d.execute_script("return window.labview.draws") or []
                time.sleep(0.5)
        periods = [b - a for a, b in zip(times[1:], times[2:], strict=False)]  # the first read ran alone
        return {
            "read": (statistics.median(reads[1:]), max(reads[1:])),
            "period": (statistics.median(periods), max(periods)),
            "api": statistics.median(api) * 1000,
            "load": statistics.median(loads),
            "draw": statistics.median(draws) if draws else float("nan"),
            "nodes": len(snap["nodes"]),
            "sessions": len(snap["sessions"]),
        }
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--reflectors", type=int, default=2)
    ap.add_argument("--samples", type=int, default=8, help="snapshots to time per lab")
    args = ap.parse_args()
    work, env, labctl = lab_env()
    env["NO_COLOR"] = "1"
    big = work / "big.yml"
    init = ["init", "--nodes", str(args.nodes), "--route-reflectors", str(args.reflectors), "--name", "big"]
    subprocess.run(labctl + init + ["-o", str(big)], check=True, env=env, capture_output=True)
    labs = [("seed", ROOT / "inventories" / "seed" / "topology.yml"), ("big", big)]
    print(
        f"{'lab':<6} {'nodes':>5} {'sessions':>8} {'read s (med/max)':>17} {'period s':>12} {'api ms':>7} "
        f"{'load ms':>8} {'draw ms':>8} {'load avg':>8}"
    )
    try:
        for name, topo in labs:
            up = subprocess.run(labctl + ["up", "-t", str(topo)], env=env, capture_output=True, text=True)
            try:
                if up.returncode != 0:
                    sys.exit(f"up {name} failed:\n{up.stderr[-2000:]}")
                r = measure(labctl, env, args.samples)  # the only lab under this home: `view` finds it
                print(
                    f"{name:<6} {r['nodes']:>5} {r['sessions']:>8} {r['read'][0]:>8.2f}/{r['read'][1]:<8.2f} "
                    f"{r['period'][0]:>5.2f}/{r['period'][1]:<6.2f} {r['api']:>7.1f} {r['load']:>8.0f} "
                    f"{r['draw']:>8.1f} {os.getloadavg()[0]:>8.1f}",
                    flush=True,
                )
            finally:
                subprocess.run(labctl + ["down", "-t", str(topo)], env=env, capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
