"""The smoke workflows cannot run here (a GitHub runner with KVM, a cloud account), but every labctl
command they run is parsed by the CLI as it is today: a renamed flag or command fails this test, not
a nightly run. Files the workflows name (topologies) exist and validate."""

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from conftest import labctl

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("smoke-*.yml"))


def commands(path: Path) -> list[list[str]]:
    """The argv after `labctl` or `$LABCTL` in every run step, with the job's env ($TOPOLOGY, ...) filled in."""
    job = yaml.safe_load(path.read_text())["jobs"]["smoke"]
    env = {k: str(v) for k, v in (job.get("env") or {}).items()}
    out = []
    for step in job["steps"]:
        for line in (step.get("run") or "").replace("\\\n", " ").splitlines():
            m = re.search(r"(?:^|[\s;&|(])(?:\$LABCTL|labctl)\s+([a-z].*)", line)
            if not m or line.lstrip().startswith("#"):
                continue
            cmd = re.split(r"\s(?:\d?>|\||&&|;)", " " + m.group(1))[0]  # up to a redirection, pipe or list
            cmd = re.sub(r"\$\{?(\w+)\}?", lambda v: env.get(v.group(1), f"<{v.group(1)}>"), cmd)
            out.append(shlex.split(cmd))
    return out


def parse(argv: list[str]):
    """Parse argv down to the leaf command as the CLI would, without running anything; raises the
    CLI's usage error (typer's own click) for an unknown command, flag or bad value."""
    from labctl.cli import app

    ctx = typer.main.get_command(app).make_context("labctl", list(argv))
    while hasattr(ctx.command, "resolve_command"):  # a group: on to its subcommand
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, args = ctx.command.resolve_command(ctx, rest)
        ctx = sub.make_context(name, args, parent=ctx)
    return ctx


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_labctl_command_in_the_workflow_parses(workflow):
    cmds = commands(workflow)
    assert any(c[:1] == ["up"] for c in cmds) and any(c[:1] == ["down"] for c in cmds), cmds
    for argv in cmds:
        try:
            ctx = parse(argv)
        except Exception as e:  # typer's vendored click: its UsageError is not click's
            pytest.fail(f"{workflow.name}: `labctl {shlex.join(argv)}`: {getattr(e, 'format_message', e.__str__)()}")
        assert ctx.info_name in argv and not ctx.args, (argv, ctx.info_name, ctx.args)  # a leaf command, all taken


def test_the_parser_refuses_what_the_cli_refuses():
    for argv in (["up", "--no-such-flag"], ["no-such-command"], ["verify", "--format", "yaml"]):
        with pytest.raises(Exception, match="No such|no such|not one of"):
            parse(argv)
    assert parse(["image", "build"]).info_name == "build"


def test_the_local_smoke_topology_validates(labhome):
    env = yaml.safe_load((ROOT / ".github/workflows/smoke-local.yml").read_text())["jobs"]["smoke"]["env"]
    p = labctl("validate", "-t", ROOT / env["TOPOLOGY"], home=labhome)
    assert p.returncode == 0, p.stderr
