"""Images for the qemu provider: build, list, rm (cached under $LABCTL_HOME/images/)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from labctl.cli import TableFormat, _Group, app, command

image_app = typer.Typer(cls=_Group, help="Base images of the qemu provider: build, list, rm.", no_args_is_help=True)
app.add_typer(image_app, name="image")


def _command(name: str | None = None):
    """image_app.command() with the CLI's one error handler."""
    return command(name, typer_app=image_app)


@_command()
def build(
    name: Annotated[str, typer.Argument(help="image to build")] = "debian-12",
    force: Annotated[bool, typer.Option("--force", help="rebuild even if the recipe is unchanged")] = False,
) -> None:
    """Build an image from the distro mirror (mmdebstrap); an unchanged recipe is a no-op."""
    from labctl.progress import Progress
    from labctl.providers.qemu import image

    t0 = time.monotonic()
    d, built = image.build(name, Progress(), force=force)
    took = time.monotonic() - t0
    typer.echo(f"{name}: {'built' if built else 'up to date'} in {took:.1f} s: {d}", err=True)
    typer.echo(str(d))


@_command("list")
def list_(format: Annotated[TableFormat, typer.Option("--format", "-f")] = TableFormat.table) -> None:
    """List the cached images (current: built from this labctl's recipe)."""
    from labctl.providers.qemu import image

    rows = image.listing()
    if format == TableFormat.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    sep = "," if format == TableFormat.csv else "\t"
    typer.echo(sep.join(["NAME", "RECIPE", "CURRENT", "DISK_MB", "BUILT", "DIR"]))
    for r in rows:
        typer.echo(sep.join(str(r[k]) for k in ("name", "recipe", "current", "disk_mb", "built", "dir")))


@_command()
def rm(
    name: Annotated[str | None, typer.Argument(help="image name; default: every image")] = None,
    force: Annotated[bool, typer.Option("--force", help="remove an image a lab's disks are based on too")] = False,
) -> None:
    """Remove cached images (every recipe version of NAME, or all of them); an image in use by a lab is
    refused unless --force."""
    from labctl.providers.qemu import image

    for d in image.remove(name, force):
        typer.echo(f"removed {d}", err=True)
