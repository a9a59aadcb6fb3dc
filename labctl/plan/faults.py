"""What `labctl fail` can break and how the lab state records it (app/faults.py breaks and repairs;
inspect shows the record)."""

from __future__ import annotations

KINDS = ("bird", "link", "node")
# repair order: a frozen node, or one cut off its LAN, cannot be reached to restart its BIRD
ORDER = ("node", "link", "bird")


def shown(state: dict) -> dict[str, str]:
    """node -> "bird,link" for inspect."""
    return {node: ",".join(k for k in KINDS if k in have) for node, have in (state.get("faults") or {}).items() if have}
