#!/usr/bin/env python3
"""Time the qemu provider: image build (cold and cached), three VMs from nothing to SSH-ready,
the containerd phases (preflight, host_prep, containerd; then again, changing nothing), `down`.
Targets under TCG: SSH-ready <= 90 s, cached build <= 1 s, down <= 15 s (KVM: SSH-ready <= 20 s).

    sudo flock /tmp/labctl-qemu.lock .venv/bin/python bench/qemu.py [--cold] [--lan 10.209.0]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KNOBS = ["-e", "preflight_min_cpus=1", "-e", "preflight_min_memory_mb=900", "-e", "containerd_source=distro"]


def timed(argv: list[str], env: dict, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-3000:]}")
    return took, p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="also time a cold image build (about a minute)")
    ap.add_argument("--lan", default="10.209.0", help="first three octets of the bench lab's /24")
    ap.add_argument("--images", default=os.environ.get("LABCTL_IMAGES", "/var/tmp/labctl-test-images"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lcq", dir="/tmp"))
    images = work / "images" if args.cold else Path(args.images)
    env = dict(os.environ, LABCTL_HOME=str(work / "h"), LABCTL_IMAGES=str(images), NO_COLOR="1")
    labctl = [sys.executable, "-m", "labctl"]
    lan = args.lan
    topo = work / "qbench.yml"
    topo.write_text(
        json.dumps(
            {
                "name": "qbench",
                "provider": "qemu",
                "network": {"lan": f"{lan}.0/24"},
                "qemu": {"control_plane": {"cpus": 1, "memory": 1024}, "worker": {"cpus": 1, "memory": 1024}},
                "nodes": {
                    "qb-cp": {"role": "control-plane", "address": f"{lan}.11"},
                    "qb-w1": {"role": "worker", "address": f"{lan}.12"},
                    "qb-w2": {"role": "worker", "address": f"{lan}.13"},
                },
            }
        )
    )
    figures: dict[str, float | str] = {}
    try:
        figures["image build, cold (s)"] = timed(labctl + ["image", "build"], env)[0] if args.cold else "skipped"
        figures["image build, cached (s)"] = timed(labctl + ["image", "build"], env)[0]
        # only the `always` play (validation) runs: `up` is then the VMs from nothing to SSH (and pinned keys)
        took, p = timed(labctl + ["up", "-t", str(topo), "--tags", "never"], env)
        figures["3 VMs nothing -> SSH-ready, whole `up` (s)"] = took
        m = re.search(r"SSH up on every node in ([0-9.]+) s", p.stderr)
        figures["  of which boot -> SSH (s)"] = float(m.group(1)) if m else "?"
        state = json.loads((work / "h" / "qbench" / "state.json").read_text())
        figures["accel"] = state["qemu"]["accel"]
        tags = ["--tags", "preflight,host_prep,containerd"]
        figures["preflight+host_prep+containerd (s)"] = timed(labctl + ["up", "-t", str(topo), *tags, *KNOBS], env)[0]
        figures["same again, 0 changes (s)"] = timed(labctl + ["up", "-t", str(topo), *tags, *KNOBS], env)[0]
    except RuntimeError as e:  # the figures so far and `down` are still worth printing
        figures["FAILED"] = str(e)[-2000:]
    finally:
        took, p = timed(labctl + ["down", "-t", str(topo)], env, check=False)
        figures["down, with the reset role (s)"] = took if p.returncode == 0 else f"FAILED: {p.stderr[-300:]}"
        shutil.rmtree(work, ignore_errors=True)
        for k, v in figures.items():
            print(f"{k:<45} {v:.1f}" if isinstance(v, float) else f"{k:<45} {v}")
    if "FAILED" in figures:
        sys.exit(1)


if __name__ == "__main__":
    main()
