#!/usr/bin/env python3
"""Time the qemu provider: image build (cold and cached), N VMs from nothing to SSH-ready, the
containerd phases (preflight, host_prep, containerd; then again, changing nothing) with seconds and
seconds per task for each phase, `down`. Every figure carries the host's load average: on a shared
host timings swing several-fold with it. `--load N` adds N busy processes for the whole run, to
compare a quiet host with a loaded one on purpose.
Targets under TCG (2 cores, 3 VMs): SSH-ready <= 90 s, cached build <= 1 s, the three phases <= 120 s,
again <= 60 s, down <= 15 s.

    sudo flock /tmp/lc-qemu.lock .venv/bin/python bench/qemu.py [--cold] [--vms 3] [--load 2] [--lan 10.209.0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KNOBS = ["-e", "preflight_min_cpus=1", "-e", "preflight_min_memory_mb=900", "-e", "containerd_source=distro"]
TAGS = "preflight,host_prep,containerd"


def timed(argv: list[str], env: dict, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-3000:]}")
    return took, p


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def phases(log: Path) -> list[tuple[str, float, int]]:
    """(phase, seconds, tasks that ran on some host) from an `up` log: a phase lasts from its
    `==> Running phase` line to the next one (or the log's last line)."""
    out: list[list] = []
    last = None
    task_ran = False
    for line in log.read_text().splitlines():
        m = re.match(r"(\d\d):(\d\d):(\d\d\.\d+) (.*)$", line)
        if not m:
            continue
        t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        text = m.group(4)
        if last is not None and t < last:  # past midnight
            t += 86400
        last = t
        if text.startswith("==> Running phase: "):
            out.append([text.removeprefix("==> Running phase: "), t, t, 0])
            task_ran = True
        elif out and re.match(r"  (TASK|HANDLER) ", text):
            task_ran = False
        elif out and re.match(r"    \S+\s+(ok|changed|failed|unreachable)\b", text) and not task_ran:
            out[-1][3] += 1
            task_ran = True
        if out:
            out[-1][2] = t
    ends = [p[1] for p in out[1:]] + [out[-1][2] if out else 0]
    return [(name, end - start, n) for (name, start, _, n), end in zip(out, ends, strict=True)]


def slowest(log: Path, n: int = 6) -> list[tuple[str, float]]:
    """The n longest tasks of an `up` log: a task lasts from its TASK/HANDLER line to the next one (or
    the next phase)."""
    marks = []
    for line in log.read_text().splitlines():
        m = re.match(r"(\d\d):(\d\d):(\d\d\.\d+) (  (?:TASK|HANDLER) (.*)|==> .*)$", line)
        if m:
            t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
            marks.append((m.group(5), t))
    spans = [(name, b[1] - a) for (name, a), b in zip(marks, marks[1:], strict=False) if name]
    return sorted(spans, key=lambda x: -x[1])[:n]


def up_with_phases(label: str, argv: list[str], env: dict, lab: Path, figures: dict) -> None:
    before = set((lab / "logs").glob("up-*.log")) if (lab / "logs").is_dir() else set()
    at = load()
    took, p = timed(argv, env)
    changed = len(re.findall(r"(?m)^    \S+\s+changed\b", p.stderr))
    figures[f"{label} (s)"] = f"{took:.1f}   ({changed} changed; {at} -> {load()})"
    logs = sorted(set((lab / "logs").glob("up-*.log")) - before)
    for name, secs, tasks in phases(logs[-1]) if logs else []:
        if name in ("preflight", "render"):  # labctl's own quick steps before ansible
            continue
        per = f"{secs / tasks:.2f} s/task" if tasks else "no task"
        figures[f"  {label[:12]}: {name[:30]}"] = f"{secs:.1f}   ({tasks} tasks, {per})"
    for name, secs in slowest(logs[-1]) if logs else []:
        figures[f"    slow task: {name[:32]}"] = f"{secs:.1f}"


def hogs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="also time a cold image build (about a minute)")
    ap.add_argument("--vms", type=int, default=3, help="VMs: one control plane and VMS-1 workers")
    ap.add_argument("--load", type=int, default=0, help="busy processes to run meanwhile (a loaded host)")
    ap.add_argument("--tags", default=TAGS, help="the phases to time")
    ap.add_argument("--lan", default="10.209.0", help="first three octets of the bench lab's /24")
    ap.add_argument(
        "--stale-index",
        action="store_true",
        help="first run: update the package index as on an image older than an hour (a fresh build's is new)",
    )
    ap.add_argument("--keep", help="copy the lab's up logs and its apt proxy's logs here before `down`")
    ap.add_argument("--images", default=os.environ.get("LABCTL_IMAGES", "/var/tmp/labctl-test-images"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lcq", dir="/tmp"))
    images = work / "images" if args.cold else Path(args.images)
    env = dict(os.environ, LABCTL_HOME=str(work / "h"), LABCTL_IMAGES=str(images), NO_COLOR="1")
    labctl = [sys.executable, "-m", "labctl"]
    lan = args.lan
    topo = work / "qbench.yml"
    nodes = {"qb-cp": {"role": "control-plane", "address": f"{lan}.11"}}
    nodes |= {f"qb-w{i}": {"role": "worker", "address": f"{lan}.{11 + i}"} for i in range(1, args.vms)}
    topo.write_text(
        json.dumps(
            {
                "name": "qbench",
                "provider": "qemu",
                "network": {"lan": f"{lan}.0/24"},
                "qemu": {"control_plane": {"cpus": 1, "memory": 1024}, "worker": {"cpus": 1, "memory": 1024}},
                "nodes": nodes,
            }
        )
    )
    lab = work / "h" / "qbench"
    figures: dict[str, float | str] = {"started": f"{dt.datetime.now(dt.UTC):%H:%M:%S} UTC, {load()}"}
    busy = hogs(args.load)
    figures["extra busy processes"] = str(args.load)
    try:
        figures["image build, cold (s)"] = timed(labctl + ["image", "build"], env)[0] if args.cold else "skipped"
        figures["image build, cached (s)"] = timed(labctl + ["image", "build"], env)[0]
        # only the `always` play (validation) runs: `up` is then the VMs from nothing to SSH (and pinned keys)
        at = load()
        took, p = timed(labctl + ["up", "-t", str(topo), "--tags", "never"], env)
        figures[f"{args.vms} VMs nothing -> SSH-ready, whole `up` (s)"] = f"{took:.1f}   ({at})"
        m = re.search(r"SSH up on every node in ([0-9.]+) s", p.stderr)
        figures["  of which boot -> SSH (s)"] = float(m.group(1)) if m else "?"
        figures["accel"] = json.loads((lab / "state.json").read_text())["qemu"]["accel"]
        argv = labctl + ["up", "-t", str(topo), "--tags", args.tags, *KNOBS]
        stale = ["-e", "containerd_apt_cache_valid_time=0"] if args.stale_index else []
        up_with_phases(args.tags, argv + stale, env, lab, figures)
        up_with_phases("same again, 0 changes", argv, env, lab, figures)
    except RuntimeError as e:  # the figures so far and `down` are still worth printing
        figures["FAILED"] = str(e)[-2000:]
    finally:
        if args.keep:
            for f in [*(lab / "logs").glob("*.log"), *(lab / "proxy").glob("*.log")]:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, Path(args.keep) / f.name)
        at = load()
        took, p = timed(labctl + ["down", "-t", str(topo)], env, check=False)
        ok = p.returncode == 0
        figures["down, with the reset role (s)"] = f"{took:.1f}   ({at})" if ok else f"FAILED: {p.stderr[-300:]}"
        for h in busy:
            h.send_signal(signal.SIGKILL)
            h.wait()
        shutil.rmtree(work, ignore_errors=True)
        for k, v in figures.items():
            print(f"{k:<48} {v:.1f}" if isinstance(v, float) else f"{k:<48} {v}")
    if "FAILED" in figures:
        sys.exit(1)


if __name__ == "__main__":
    main()
