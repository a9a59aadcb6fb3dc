"""How to add a provider: a class with the hooks it needs (labctl/providers/base.py: every hook takes
the typed LabModel, Node or Router) and one entry in labctl.spec.providers.REGISTRY naming it and its
Traits. Here a toy provider, registered for one test, takes `labctl up --dry-run` through the
provider boundary: its checks see the lab model, the plan is printed, nothing is made on the host."""

import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import SEED
from labctl import cli
from labctl.plan.model import LabModel
from labctl.providers.base import Provider
from labctl.spec import providers as registry

pytestmark = pytest.mark.unit

SEEN: list[LabModel] = []


class ToyProvider(Provider):
    """Nodes that exist nowhere: enough for validate and `up --dry-run`; a real provider makes them
    in bootstrap and removes them in teardown."""

    name = "toy"
    up_playbook = "toy-up.yml"

    def checks(self, model: LabModel) -> list[str]:
        SEEN.append(model)
        return [f"toy: {len(model.nodes)} nodes, lab {model.name}"]

    def preflight(self, model: LabModel) -> list[str]:
        raise AssertionError("--dry-run ran preflight")

    def bootstrap(self, model: LabModel, progress) -> dict:
        raise AssertionError("--dry-run bootstrapped")

    def teardown(self, lab, progress) -> None:
        raise AssertionError("--dry-run tore down")


@pytest.fixture
def toy(monkeypatch):
    # the one line a new provider adds to the registry: where its class is, and its traits
    entry = registry.Entry(f"{__name__}:ToyProvider", registry.Traits(lab_key=True))
    monkeypatch.setitem(registry.REGISTRY, "toy", entry)
    SEEN.clear()


def _host() -> tuple:
    """What labctl could make on this host: links, network namespaces."""
    netns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    return sorted(os.listdir("/sys/class/net")), netns


def test_a_new_provider_is_a_class_and_a_registry_entry(toy, tmp_path, labhome):
    d = yaml.safe_load(SEED.read_text())
    d["name"], d["provider"] = "lctoy", "toy"
    t = tmp_path / "toy.yml"
    t.write_text(yaml.safe_dump(d, sort_keys=False))
    before = _host()

    r = CliRunner().invoke(cli.app, ["up", "--dry-run", "-t", str(t)], env={"NO_COLOR": "1"})

    assert r.exit_code == 0, r.output
    assert "labctl: warning: toy: 3 nodes, lab lctoy" in r.stderr
    for node in d["nodes"]:  # the plan of a new lab: every node added
        assert node in r.stdout
    (model,) = SEEN  # the provider's hook got the typed model, not a dict
    assert isinstance(model, LabModel) and model.provider == "toy"
    assert [n.name for n in model.nodes] == list(d["nodes"])
    assert not (labhome / "lctoy").exists() and list(Path(labhome).iterdir()) == []
    assert _host() == before

    # an unregistered name is still refused, by the same registry
    d["provider"] = "toy2"
    t.write_text(yaml.safe_dump(d, sort_keys=False))
    r = CliRunner().invoke(cli.app, ["up", "--dry-run", "-t", str(t)], env={"NO_COLOR": "1"})
    assert r.exit_code == 2 and "'toy2' is not one of the providers" in r.output, r.output
