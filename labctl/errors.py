"""The one error family. The CLI prints `str(err)` on one line and exits with `err.exit_code`."""

from __future__ import annotations


class LabctlError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UsageError(LabctlError):
    """Bad input: arguments, topology files."""

    exit_code = 2


class TopologyError(UsageError):
    """One or more problems in a topology file; each is already one formatted line."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} problem(s) in topology")
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(self.problems)


class HostError(LabctlError):
    """The host cannot run the lab: not root, missing tools, CIDR overlaps."""


class LockedError(LabctlError):
    pass


class ProvisionError(LabctlError):
    """A playbook failed; the message names host, task and log file."""


class Interrupted(LabctlError):
    def __init__(self, signum: int, during: str | None = None, hint: str | None = None):
        super().__init__(
            f"interrupted during {during}" if during else "interrupted",
            hint or "run `labctl up` again to continue, or `labctl down` to clean up",
        )
        self.signum = signum
        self.exit_code = 128 + signum
