"""Providers: how a lab's nodes come to exist and go away (labctl/providers/base.py says what a
provider decides). All share the topology, the rendered lab dir, the runner and the SSH machinery;
each names its own playbooks. A new provider: a module here and one line in labctl.spec.providers.REGISTRY."""

from __future__ import annotations

import importlib

from labctl.plan.layout import LabDir
from labctl.providers.base import Provider, Remains
from labctl.spec import providers as registry


def kind(name: str) -> type[Provider]:
    """The provider class of this name (the registry, labctl.spec.providers, names its module), imported
    only when used."""
    module, _, cls = registry.entry(name).impl.partition(":")
    return getattr(importlib.import_module(module), cls)


def get(name: str, lab=None) -> Provider:
    """The provider of a lab (lab=None: only for reading nodes, e.g. its birdc command)."""
    return kind(name)(lab)


def _on_host() -> list[type[Provider]]:
    """The providers whose nodes live on this host: only their labs leave anything here to find."""
    return [kind(n) for n in registry.names() if registry.traits(n).nodes_on_host]


def orphan(lab) -> Remains | None:
    """What a lab whose directory is gone left on this host, as its provider's teardown takes it;
    None if nothing."""
    return next((left for p in _on_host() if (left := p.left_on_host(lab.dir)) is not None), None)


def orphans() -> dict[str, str]:
    """Labs of this labctl home that left something on the host but have no directory: name -> provider."""
    return {name: p.name for p in _on_host() for name in p.orphans()}


def other_home(lab) -> str | None:
    """The lab dir of another labctl home whose lab of this lab's name runs on this host, if any."""
    return next((other for p in _on_host() if (other := p.other_home(lab.dir)) is not None), None)


def running_from(lab_dir: LabDir) -> list[int]:
    """The processes of this host that run from the lab dir's node dirs (a lab that is up)."""
    return [pid for p in _on_host() for pid in p.running_from(lab_dir)]
