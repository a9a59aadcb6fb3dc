"""One SSH session per node, all nodes at once: the read side's parallel fan-out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

MAX_SESSIONS = 16  # sshd's MaxStartups and the host's CPUs, not the lab size, bound this


def each(fn: Callable, items: Iterable) -> list:
    """fn(item) for every item, in parallel, results in the items' order."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_SESSIONS, len(items))) as ex:
        return list(ex.map(fn, items))
