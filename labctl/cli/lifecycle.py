"""Lab lifecycle: validate, schema, init, render, up, down, list."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Annotated

import typer

from labctl.cli import CheckFormat, NameOpt, TableFormat, TopologyOpt, command, load_topology, plural
from labctl.errors import UsageError


def _checked(t):
    """The lab `up` would build, after the provider's checks that `up`'s preflight runs too (a mesh
    past the host's ARP table, a lab dir too deep for socket paths): refused alike everywhere."""
    from labctl.app.lab import Lab
    from labctl.plan import layout

    lab = Lab(layout.lab_dir(t.name))
    for w in lab.check(t):
        typer.echo(f"labctl: warning: {w}", err=True)
    return lab


@command()
def validate(topology_file: TopologyOpt = None) -> None:
    """Check a topology file; one line per problem, exit 2 if there is any."""
    t, src = load_topology(topology_file)
    _checked(t)
    wl = len(t.workloads) if t.workloads is not None else len(t.nodes)
    typer.echo(f"{src}: ok: lab {t.name} ({t.provider}), {plural(len(t.nodes), 'node')}, {plural(wl, 'workload')}")


@command()
def schema() -> None:
    """Print the topology file's JSON Schema."""
    from labctl.spec import schema as s

    typer.echo(json.dumps(s.schema(), indent=2))


@command()
def init(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=2000, help="number of nodes (1 control plane)")] = 3,
    route_reflectors: Annotated[
        int, typer.Option("--route-reflectors", min=0, help="first K nodes reflect routes")
    ] = 0,
    name: Annotated[str, typer.Option("--name", "-n", help="lab name")] = "lab",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
) -> None:
    """Write a topology of N nodes: the seed's layout, scaled (route reflectors for big labs)."""
    from labctl.spec import generate, topology

    if route_reflectors > nodes:
        raise UsageError(f"--route-reflectors {route_reflectors} is more than --nodes {nodes}")
    if output is not None and output.is_dir():
        raise UsageError(f"-o {output}: is a directory", f"name a file, e.g. {output / 'topology.yml'}")
    if output is not None and not output.parent.is_dir():
        raise UsageError(f"-o {output}: no directory {output.parent}", "name a file in an existing directory")
    text = generate.topology(nodes, route_reflectors, name)
    topology.loads(text, "<generated>")  # what init writes, validate accepts
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)


@command()
def render(
    topology_file: TopologyOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="lab directory to write")] = None,
    no_ipip: Annotated[bool, typer.Option("--no-ipip", help="render as for a kernel without ipip")] = False,
) -> None:
    """Write the lab directory (inventory, kubeadm, Calico, BIRD, labels) without touching any host."""
    from labctl.outputs import render as r
    from labctl.plan import layout
    from labctl.spec import schedule

    t, src = load_topology(topology_file)
    lab = layout.LabDir(output.resolve()) if output else layout.lab_dir(t.name)
    _render_target(lab)
    for path in r.render(schedule.plan(t), lab, src, ipip=not no_ipip):
        typer.echo(path)


def _render_target(lab) -> None:
    """render replaces files and makes the directory 0700: only a new or empty directory, or a
    lab directory of a lab that is not up (its own earlier render, say)."""
    from labctl import providers

    root = lab.root
    # the directory itself, or the nearest part of its path that exists, is a file: bad input, as validate's
    there = next((p for p in (root, *root.parents) if p.exists()), root)
    if not there.is_dir():
        raise UsageError(f"{there} is not a directory", "render into a new or empty directory")
    running = providers.running_from(lab)
    if lab.is_live() or running:
        why = f"{lab.state.name} is there" if lab.is_live() else f"pid {running[0]} runs from it"
        raise UsageError(
            f"{root} belongs to a lab that is up ({why}): rendering would replace its data",
            "render elsewhere, or `labctl down` that lab first",
        )
    try:
        unrelated = root.is_dir() and not lab.is_lab() and any(root.iterdir())
    except OSError as e:
        raise UsageError(f"cannot read {root}: {e.strerror}", "render into a new or empty directory") from None
    if unrelated:
        raise UsageError(
            f"{root} is not empty and is not a lab directory: refusing to write into it",
            "render into a new or empty directory (or a lab directory rendered before)",
        )


def _extra_vars(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--extra-var {item!r} is not KEY=VALUE", "e.g. -e preflight_min_cpus=1")
        out[key] = yaml.safe_load(value) if value else ""
    return out


def _progress(lab_dir, command: str):
    from labctl.progress import Progress

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Progress(lab_dir.logs / f"{command}-{stamp}.log")


@command()
def up(
    topology_file: TopologyOpt = None,
    check: Annotated[bool, typer.Option("--check", help="ansible check mode: show what would change")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan (add/remove/change per node), touch nothing")
    ] = False,
    format: Annotated[
        CheckFormat, typer.Option("--format", "-f", help="plan format with --dry-run (table = text)")
    ] = CheckFormat.table,
    tags: Annotated[
        str | None, typer.Option("--tags", help="run only these phases (ansible tags, comma-separated)")
    ] = None,
    accept_new_host_keys: Annotated[
        bool, typer.Option("--accept-new-host-keys", help="vm: trust and pin host keys seen for the first time")
    ] = False,
    extra_var: Annotated[
        list[str] | None, typer.Option("--extra-var", "-e", help="KEY=VALUE for the playbooks (repeatable)")
    ] = None,
) -> None:
    """Create the lab (default: the seed lab) or apply a changed topology to it; labels are applied last."""
    from labctl.app.lab import Lab
    from labctl.plan import diff as reconcile
    from labctl.plan import layout

    t, src = load_topology(topology_file)
    if dry_run:
        change = _checked(t).plan_change(t)
        typer.echo(reconcile.format(change, "json" if format.value == "json" else "text"))
        if refused := reconcile.refusal(change, t.name):
            raise refused
        return
    lab = Lab(layout.lab_dir(t.name))
    lab.dir.claim()  # before its log goes there: never into a directory that is not a lab's
    progress = _progress(lab.dir, "up")
    try:
        st = lab.up(
            t,
            src,
            progress,
            check=check,
            tags=tags,
            accept_new_host_keys=accept_new_host_keys,
            extravars=_extra_vars(extra_var or []),
        )
    finally:
        progress.close()
    tunnel = (st.get("tunnel") or {}).get("device") or "none"
    typer.echo(
        f"lab {t.name} is up: {plural(len(t.nodes), 'node')}, tunnel {tunnel}; "
        f"next: labctl inspect, labctl verify (log: {progress.log_path})",
        err=True,
    )


@command()
def down(
    topology_file: TopologyOpt = None,
    name: NameOpt = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="vm: also remove the Kubernetes and containerd packages")
    ] = False,
) -> None:
    """Remove everything the lab created; a lab that is already gone is not an error."""
    from labctl import providers
    from labctl.app.lab import Lab
    from labctl.plan import layout
    from labctl.progress import Progress
    from labctl.spec import topology

    if name is None and topology_file is not None:
        # the topology names the lab; what exists of it is this home's lab dir, or what its lab left
        # on the host (never what the topology's names would be: another home's lab has the same)
        lab = Lab(layout.lab_dir(topology.load(topology_file).name))
    else:
        try:
            lab = Lab.find(name, None)
        except UsageError as e:
            if "no lab" not in str(e):
                raise
            if left := sorted(providers.orphans()):
                raise UsageError(
                    f"no lab under {layout.home()}, but {', '.join(left)} left namespaces and processes on this host",
                    f"remove them with `labctl down --name {left[0]}`",
                ) from None
            typer.echo("no lab to remove", err=True)
            return
        if name is not None and not lab.dir.root.exists() and providers.orphan(lab) is None:
            if Lab.was_removed(name):
                typer.echo(f"lab {name}: already removed", err=True)
                return
            known = sorted(set(Lab.names()) | set(providers.orphans()))
            raise UsageError(
                f"no lab {name!r} under {layout.home()}",
                f"labs: {', '.join(known)}" if known else "there are no labs",
            )
    progress = Progress(None)
    removed = lab.down(progress, purge=purge)
    typer.echo(f"lab {lab.name} removed" if removed else f"lab {lab.name}: nothing to remove", err=True)


@command("list")
def list_labs(
    format: Annotated[TableFormat, typer.Option("--format", "-f")] = TableFormat.table,
) -> None:
    """List labs and their phase (`orphaned`: its directory is gone, its namespaces are not)."""
    import csv
    import io

    from labctl import providers
    from labctl.app.lab import Lab

    rows = []
    orphans = providers.orphans()
    for n in sorted(set(Lab.names()) | set(orphans)):
        st = Lab.find(n).state()
        if n in orphans and not st:
            st = {"provider": orphans[n], "phase": "orphaned"}
        rows.append({"name": n, "provider": st.get("provider", "?"), "phase": st.get("phase", "?"),
                     "updated": st.get("updated", "")})  # fmt: skip
    if format is TableFormat.json:
        typer.echo(json.dumps(rows, indent=2))
    elif format is TableFormat.csv:
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=["name", "provider", "phase", "updated"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        typer.echo(out.getvalue(), nl=False)
    else:
        table = [["NAME", "PROVIDER", "PHASE", "UPDATED"]] + [list(r.values()) for r in rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(4)]
        for row in table:
            typer.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
