"""A check's result, the one shape verify and the topology's own checks (labchecks) report."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    check: str
    target: str
    ok: bool
    detail: str = ""
    skipped: bool = False  # not run: what it needs could not be read (ok is False, but nothing failed)

    @property
    def result(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.ok else "FAIL")


def skip(check: str, target: str, unreachable: str) -> Check:
    return Check(check, target, False, f"not run: {unreachable} unreachable", skipped=True)
