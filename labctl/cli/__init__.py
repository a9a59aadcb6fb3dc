"""Thin Typer commands: parse arguments, call the lab, print data to stdout and errors to stderr.

The commands live in a few modules by concern (lifecycle, observe, access); this module holds what
they share: the app, the common options, the one error handler and the lab/node lookups."""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib
import inspect
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from labctl import __version__
from labctl.errors import Interrupted, LabctlError, TopologyError, UsageError


def _plain_flags(params: list) -> list:
    # typer's help prints a type for every option, `--debug <bool>` too, though a flag takes no value,
    # and a repeatable one as a Python type (`<list[str]>`)
    for p in params:
        if p.metavar is not None:
            continue
        if isinstance(p, typer.core.TyperOption) and p.is_flag:
            p.metavar = ""
        elif isinstance(p, typer.core.TyperOption) and p.multiple:
            p.metavar = "<str>"
        elif isinstance(p, typer.core.TyperArgument) and p.nargs == -1:
            p.display_type_rich = lambda ctx: "<str>..."  # the type column; not a metavar, which renames it
    return params


def _one_line_summary(doc: str | None) -> str | None:
    """A docstring as help text: its lines joined (the help reflows them to the terminal), paragraphs kept."""
    if not doc:
        return doc
    paras = [" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n")]
    return "\n\n".join(p for p in paras if p)


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


def guarded(fn):
    """fn whose LabctlError, or an OSError of the host (a file it cannot write, a LABCTL_HOME it may
    not read), becomes one line on stderr and an exit code."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LabctlError as e:
            fail(e)
        except OSError as e:
            if _debug:
                raise
            what = f"{e.filename}: " if e.filename else ""
            hint = "run labctl as root, or set LABCTL_HOME to a directory you own"
            fail(LabctlError(f"{what}{e.strerror or e}", hint if isinstance(e, PermissionError) else None))
        except (typer.Exit, typer.Abort, typer.TyperException):  # a command's own way out, and bad usage
            raise
        except Exception as e:  # a bug of labctl's: one line, the traceback with --debug
            if _debug:
                raise
            fail(
                LabctlError(
                    f"internal error: {type(e).__name__}: {e}",
                    "a bug in labctl: run again with --debug and report the traceback",
                )
            )

    return run


def command(name: str | None = None, typer_app=None, **kw):
    """app.command() whose LabctlError becomes one line on stderr and the error's exit code."""

    def wrap(fn):
        kw.setdefault("help", _one_line_summary(fn.__doc__))
        return (typer_app or app).command(name, cls=_Command, **kw)(guarded(fn))

    return wrap


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, unwinding like Ctrl-C through the cleanup of what runs on a node."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stoppable(message: str = "labctl: interrupted"):
    """Ctrl-C, SIGTERM and SIGHUP unwind through the cleanup of what runs on a node (tcpdump, an exec'd
    command: ended by pid), then exit 128+signal. SIGINT is set explicitly: a shell's background job
    starts with it ignored."""

    def stop(signum, _frame):
        raise Stopped(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except KeyboardInterrupt as e:
        typer.echo(message, err=True)
        raise typer.Exit(128 + getattr(e, "signum", signal.SIGINT)) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def load_topology(path: Path | None):
    from labctl.plan import layout
    from labctl.spec import topology

    src = path if path is not None else layout.seed_topology()
    return topology.load(src), src


def find_lab(name: str | None, topo_file: Path | None = None):
    from labctl.app.lab import Lab

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
