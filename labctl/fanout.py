"""One SSH session per node, all nodes at once: the read side's parallel fan-out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

MAX_SESSIONS = 16  # sshd's MaxStartups and the host's CPUs, not the lab size, bound this


def each(fn: Callable, items: Iterable, workers: int = MAX_SESSIONS) -> list:
    """fn(item) for every item, at most `workers` at once, results in the items' order. The first
    error (an Interrupted from a checkpoint, a HostError) is raised once the running calls end; the
    calls not started yet are dropped (map's iterator cancels them)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as ex:
        return list(ex.map(fn, items))
