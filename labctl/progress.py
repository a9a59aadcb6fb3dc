"""Progress on stderr (k0sctl style `==> Running phase: X`) and the same lines in the lab's log file."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import TextIO

from rich.console import Console

_STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red", "unreachable": "bold red", "skipped": "dim"}


class Progress:
    def __init__(self, log_path: Path | None = None, quiet: bool = False):
        # rich honours NO_COLOR and turns colour off when stderr is not a terminal
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.plain = "NO_COLOR" in os.environ  # no colour and no bold either
        self.quiet = quiet
        self.log_path = log_path
        self.last_phase: str | None = None
        self._log: TextIO | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._log = os.fdopen(fd, "a", buffering=1)

    def log(self, text: str) -> None:
        if self._log is not None:
            stamp = _dt.datetime.now().strftime("%H:%M:%S.%f")[:-3]
            for line in text.rstrip("\n").splitlines() or [""]:
                self._log.write(f"{stamp} {line}\n")

    def _say(self, text: str, style: str | None = None) -> None:
        self.log(text)
        if not self.quiet:
            self.console.print(text, style=None if self.plain else style, markup=False)

    def phase(self, name: str) -> None:
        self.last_phase = name
        self._say(f"==> Running phase: {name}", "bold")

    def task(self, name: str) -> None:
        self._say(f"  {name}")

    def host(self, host: str, status: str, seconds: float | None = None, detail: str = "") -> None:
        took = f" {seconds:5.2f}s" if seconds is not None else ""
        line = f"    {host:<24} {status:<11}{took}{('  ' + detail) if detail else ''}"
        self.log(line)
        if not self.quiet:
            self.console.print(line, style=None if self.plain else _STYLE.get(status), markup=False)

    def info(self, text: str) -> None:
        self._say(text)

    def warn(self, text: str) -> None:
        self._say(f"WARNING: {text}", "bold yellow")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
