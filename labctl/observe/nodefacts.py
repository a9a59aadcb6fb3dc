"""The facts of a lab's nodes, read through its provider (the way to its BIRD) and its dataplane (the
route protocols to expect): what inspect and verify read."""

from __future__ import annotations

from labctl import providers
from labctl.live.nodes import NodeFacts, gather
from labctl.plan.model import LabModel
from labctl.spec import calico


def gather_lab(
    lab, model: LabModel, extra: dict[str, dict[str, str]] | None = None, names: bool = False, shell=None
) -> list[NodeFacts]:
    """gather() for a lab: its provider's way to BIRD, its dataplane's route protocols."""

    prov = providers.get(model.provider, lab)
    protocols = calico.lab_protocols(model)
    return gather(lab.dir, model.nodes, extra, model.provider, prov.birdc, protocols, names, shell=shell)
