"""Thin Typer commands: parse arguments, call the lab, print data to stdout and errors to stderr.

The commands live in a few modules by concern (lifecycle, observe, access); this module holds what
they share: the app, the common options, the one error handler and the lab/node lookups."""

from __future__ import annotations

import enum
import functools
import importlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from labctl import __version__
from labctl.errors import Interrupted, LabctlError, TopologyError, UsageError


def _plain_flags(params: list) -> list:
    # typer's help prints a type for every option, `--debug <bool>` too, though a flag takes no value
    for p in params:
        if isinstance(p, typer.core.TyperOption) and p.is_flag and p.metavar is None:
            p.metavar = ""
    return params


class _Command(typer.core.TyperCommand):
    def get_params(self, ctx):
        return _plain_flags(super().get_params(ctx))


class _Group(typer.core.TyperGroup):
    def get_params(self, ctx):
        return _plain_flags(super().get_params(ctx))

    def main(self, *args, **kwargs):
        # usage errors are drawn by rich, which honours NO_COLOR for colours but not FORCE_COLOR's
        # bold and dim: with NO_COLOR nothing is styled at all (imported only then: 65 ms per command)
        if os.environ.get("NO_COLOR"):
            from typer import rich_utils

            rich_utils.COLOR_SYSTEM = None
        return super().main(*args, **kwargs)


app = typer.Typer(
    cls=_Group,
    name="labctl",
    help="Build and study a Kubernetes + Calico networking lab (netns on this host, or real VMs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_debug = False

TopologyOpt = Annotated[Path | None, typer.Option("--topology", "-t", help="topology YAML file", show_default=False)]
NameOpt = Annotated[str | None, typer.Option("--name", "-n", help="lab name (default: the only lab)")]


class TableFormat(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class CheckFormat(enum.StrEnum):
    table = "table"
    json = "json"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def fail(err: LabctlError) -> None:
    # --debug is for labctl's own failures: bad input stays a one-line error with exit 2
    if _debug and not isinstance(err, (UsageError, Interrupted)):
        raise err
    if isinstance(err, TopologyError):
        for line in err.problems:
            typer.echo(line, err=True)
    elif isinstance(err, Interrupted):
        typer.echo(f"labctl: {err}", err=True)
    else:
        typer.echo(f"labctl: error: {err}", err=True)
    raise typer.Exit(err.exit_code) from None


def command(name: str | None = None, **kw):
    """app.command() whose LabctlError becomes one line on stderr and the error's exit code."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except LabctlError as e:
                fail(e)

        return app.command(name, cls=_Command, **kw)(run)

    return wrap


def load_topology(path: Path | None):
    from labctl import layout, topology

    src = path if path is not None else layout.seed_topology()
    return topology.load(src), src


def find_lab(name: str | None, topo_file: Path | None = None):
    from labctl.lab import Lab

    return Lab.find(name, topo_file).require()


def find_node(lab, node: str):
    """The lab model's node (or router: exec/ssh reach a lab's routers too) of that name."""
    nodes = lab.model().speakers
    n = next((x for x in nodes if x.name == node), None)
    if n is None:
        raise UsageError(f"no node {node!r} in lab {lab.name}", f"nodes: {', '.join(x.name for x in nodes)}")
    return n


def _version(value: bool) -> None:
    if value:
        typer.echo(f"labctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_version, is_eager=True)
    ] = False,
) -> None:
    global _debug
    _debug = debug


# the command modules register themselves on `app`, in the order --help lists them
for _module in ("lifecycle", "observe", "access", "lab_tools", "image"):
    importlib.import_module(f"labctl.cli.{_module}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("labctl: interrupted", err=True)
        sys.exit(130)
