"""Choices the vm roles make once per lab and labctl keeps in the lab state (`decided`), so that every
later `up` passes them back and makes the same choice: which containerd a node runs (distro package or
upstream release), which the containerd role would otherwise decide again from the distro's candidate
version, swapping the runtime under a running cluster after a distro update. The roles write FILE in
the lab dir (containerd_record); `collect` moves it into the state after each run."""

from __future__ import annotations

import json

FILE = "decided.json"


def collect(lab) -> dict:
    """Merge what the last run recorded into the lab state; the `decided` block now kept."""
    path = lab.dir.root / FILE
    try:
        new = json.loads(path.read_text())
    except (OSError, ValueError):
        return lab.state().get("decided") or {}
    path.unlink(missing_ok=True)
    kept = lab.state().get("decided") or {}
    sources = kept.get("containerd_source", {}) | {n: s for n, s in new.get("containerd_source", {}).items() if s}
    return lab.save_state(decided=kept | {"containerd_source": sources})["decided"]


def extravars(state: dict) -> dict:
    """What the next run is given: the containerd every node already runs (one source for the lab);
    the user's own -e containerd_source=... still wins (it comes later)."""
    sources = set(((state.get("decided") or {}).get("containerd_source") or {}).values())
    return {"containerd_source": sources.pop()} if len(sources) == 1 else {}
