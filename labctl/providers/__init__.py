"""Providers: how a lab's nodes come to exist and go away. Both share the topology, the
rendered lab dir, the runner and the SSH machinery; each names its own playbooks."""

from __future__ import annotations

from labctl.errors import UsageError

NAMES = ("netns", "vm")


def get(name: str, lab):
    if name == "netns":
        from labctl.providers.netns import NetnsProvider

        return NetnsProvider(lab)
    if name == "vm":
        from labctl.providers.vm import VmProvider

        return VmProvider(lab)
    raise UsageError(f"unknown provider {name!r}", f"valid providers: {', '.join(NAMES)}")
