"""Providers: how a lab's nodes come to exist and go away. Both share the topology, the
rendered lab dir, the runner and the SSH machinery; each names its own playbooks."""

from __future__ import annotations

from labctl.errors import UsageError

NAMES = ("netns", "vm", "qemu")


def cls(name: str):
    """The provider's class: what it implies before a lab exists (render reads node_login and
    default_proxy from it)."""
    if name == "netns":
        from labctl.providers.netns import NetnsProvider

        return NetnsProvider
    if name == "vm":
        from labctl.providers.vm import VmProvider

        return VmProvider
    if name == "qemu":
        from labctl.providers.qemu import QemuProvider

        return QemuProvider
    raise UsageError(f"unknown provider {name!r}", f"valid providers: {', '.join(NAMES)}")


def get(name: str, lab):
    if name == "qemu":
        return cls(name)(lab)
    if name == "netns":
        from labctl.providers.netns import NetnsProvider

        return NetnsProvider(lab)
    if name == "vm":
        from labctl.providers.vm import VmProvider

        return VmProvider(lab)
    raise UsageError(f"unknown provider {name!r}", f"valid providers: {', '.join(NAMES)}")
