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


def orphan(lab) -> dict | None:
    """What a lab whose directory is gone left on this host, as lab data its provider's teardown
    takes (only netns labs leave anything on this host); None if nothing."""
    from labctl.providers import netns

    return netns.orphan_data(lab.dir)


def orphans() -> list[str]:
    """Labs of this labctl home that left something on the host but have no directory."""
    from labctl.providers import netns

    return netns.orphans()
