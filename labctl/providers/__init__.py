"""Providers: how a lab's nodes come to exist and go away (labctl/providers/base.py says what a
provider decides). All share the topology, the rendered lab dir, the runner and the SSH machinery;
each names its own playbooks. A new provider: a module here and one line in labctl.spec.providers.REGISTRY."""

from __future__ import annotations

import importlib

from labctl.providers.base import Provider
from labctl.spec.providers import entry


def kind(name: str) -> type[Provider]:
    """The provider class of this name (the registry, labctl.spec.providers, names its module), imported
    only when used."""
    module, _, cls = entry(name).impl.partition(":")
    return getattr(importlib.import_module(module), cls)


def get(name: str, lab=None) -> Provider:
    """The provider of a lab (lab=None: only for reading nodes, e.g. its birdc command)."""
    return kind(name)(lab)


def orphan(lab) -> dict | None:
    """What a lab whose directory is gone left on this host, as lab data its provider's teardown
    takes (only netns labs leave anything on this host); None if nothing."""
    from labctl.providers.netns import provider as netns

    return netns.orphan_data(lab.dir)


def orphans() -> list[str]:
    """Labs of this labctl home that left something on the host but have no directory."""
    from labctl.providers.netns import provider as netns

    return netns.orphans()


def other_home(lab) -> str | None:
    """The lab dir of another labctl home whose lab of this lab's name runs on this host, if any."""
    from labctl.providers.netns import provider as netns

    return netns.other_home(lab.dir)


def running_from(lab_dir) -> list[int]:
    """The processes of this host that run from the lab dir's node dirs (a lab that is up)."""
    from labctl.providers.netns import provider as netns

    return netns.running_from(lab_dir)
