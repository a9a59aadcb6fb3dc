"""Running host commands: argv lists only, never a shell, errors carry the command's stderr."""

from __future__ import annotations

import signal
import subprocess

from labctl.errors import HostError, Interrupted


def run(
    argv: list[str], check: bool = True, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    except FileNotFoundError:
        raise HostError(f"{argv[0]} is not installed", "see README: Requirements") from None
    except subprocess.TimeoutExpired:
        raise HostError(f"{' '.join(argv)} did not finish in {timeout:.0f} s") from None
    if -p.returncode in (signal.SIGINT, signal.SIGTERM):
        # Ctrl-C reaches the whole foreground process group: the command did not fail, we were stopped
        raise Interrupted(-p.returncode)
    if check and p.returncode != 0:
        err = (p.stderr or p.stdout).strip().splitlines()
        raise HostError(f"{' '.join(argv)} failed: {err[-1] if err else f'exit {p.returncode}'}")
    return p


def ok(argv: list[str]) -> bool:
    return run(argv, check=False).returncode == 0
