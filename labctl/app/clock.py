"""The time stamps a lab's state records (created, updated, a fault's since)."""

from __future__ import annotations

import datetime as _dt


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
