"""Thin Typer commands: parse arguments, call the lab, print data to stdout and errors to stderr."""

from __future__ import annotations

import datetime as _dt
import enum
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from labctl import __version__
from labctl.errors import LabctlError, TopologyError, UsageError

app = typer.Typer(
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


class GraphFormat(enum.StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"


class TraceFormat(enum.StrEnum):
    text = "text"
    json = "json"


def _fail(err: LabctlError) -> None:
    if _debug:
        raise err
    if isinstance(err, TopologyError):
        for line in err.problems:
            typer.echo(line, err=True)
    else:
        typer.echo(f"labctl: error: {err}", err=True)
    raise typer.Exit(err.exit_code) from None


def _topology(path: Path | None):
    from labctl import layout, topology

    src = path if path is not None else layout.seed_topology()
    return topology.load(src), src


def _find_lab(name: str | None, topo_file: Path | None):
    from labctl.lab import Lab

    return Lab.find(name, topo_file).require()


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


@app.command()
def validate(topology_file: TopologyOpt = None) -> None:
    """Check a topology file; one line per problem, exit 2 if there is any."""
    try:
        t, src = _topology(topology_file)
    except LabctlError as e:
        _fail(e)
    wl = len(t.workloads) if t.workloads is not None else len(t.nodes)
    typer.echo(f"{src}: ok: lab {t.name} ({t.provider}), {len(t.nodes)} nodes, {wl} workloads")


@app.command()
def schema() -> None:
    """Print the topology file's JSON Schema."""
    from labctl import topology

    typer.echo(json.dumps(topology.schema(), indent=2))


@app.command()
def init(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=2000, help="number of nodes (1 control plane)")] = 3,
    route_reflectors: Annotated[
        int, typer.Option("--route-reflectors", min=0, help="first K nodes reflect routes")
    ] = 0,
    name: Annotated[str, typer.Option("--name", "-n", help="lab name")] = "lab",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
) -> None:
    """Write a topology of N nodes: the seed's layout, scaled (route reflectors for big labs)."""
    from labctl import generate, topology

    try:
        if route_reflectors > nodes:
            raise UsageError(f"--route-reflectors {route_reflectors} is more than --nodes {nodes}")
        text = generate.topology(nodes, route_reflectors, name)
        topology.loads(text, "<generated>")  # what init writes, validate accepts
    except LabctlError as e:
        _fail(e)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)


@app.command()
def render(
    topology_file: TopologyOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="lab directory to write")] = None,
    no_ipip: Annotated[bool, typer.Option("--no-ipip", help="render as for a kernel without ipip")] = False,
) -> None:
    """Write the lab directory (inventory, kubeadm, Calico, BIRD, labels) without touching any host."""
    from labctl import layout, topology
    from labctl import render as r

    try:
        t, src = _topology(topology_file)
        lab = layout.LabDir(output.resolve()) if output else layout.lab_dir(t.name)
        for path in r.render(topology.plan(t), lab, src, ipip=not no_ipip):
            typer.echo(path)
    except LabctlError as e:
        _fail(e)


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


@app.command()
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
    from labctl import layout, reconcile
    from labctl.lab import Lab

    try:
        t, src = _topology(topology_file)
        lab = Lab(layout.lab_dir(t.name))
        if dry_run:
            typer.echo(reconcile.format(lab.plan_change(t), "json" if format.value == "json" else "text"))
            return
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
    except LabctlError as e:
        _fail(e)
    tunnel = (st.get("tunnel") or {}).get("device") or "none"
    typer.echo(
        f"lab {t.name} is up: {len(t.nodes)} nodes, tunnel {tunnel}; "
        f"next: labctl inspect, labctl verify (log: {progress.log_path})",
        err=True,
    )


@app.command()
def down(
    topology_file: TopologyOpt = None,
    name: NameOpt = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="vm: also remove the Kubernetes and containerd packages")
    ] = False,
) -> None:
    """Remove everything the lab created; a lab that is already gone is not an error."""
    from labctl import layout, topology
    from labctl import render as r
    from labctl.lab import Lab
    from labctl.progress import Progress

    try:
        data = None
        if name is None and topology_file is not None:
            t = topology.load(topology_file)
            lab = Lab(layout.lab_dir(t.name))
            if not lab.dir.topology_data.exists():
                # the lab dir is gone: tear down by the names the topology implies
                plan = topology.plan(t)
                data = r.topology_data(plan, r.context(plan, lab.dir))
        else:
            try:
                lab = Lab.find(name, None)
            except UsageError as e:
                if "no lab" in str(e):
                    typer.echo("no lab to remove", err=True)
                    return
                raise
        progress = Progress(None)
        removed = lab.down(progress, data, purge=purge)
    except LabctlError as e:
        _fail(e)
    typer.echo(f"lab {lab.name} removed" if removed else f"lab {lab.name}: nothing to remove", err=True)


@app.command("list")
def list_labs() -> None:
    """List labs and their phase."""
    from labctl.lab import Lab

    for n in Lab.names():
        st = Lab.find(n).state()
        typer.echo(f"{n}\t{st.get('provider', '?')}\t{st.get('phase', '?')}")


@app.command()
def inspect(
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[TableFormat, typer.Option("--format", "-f")] = TableFormat.table,
) -> None:
    """Show each live node: physical IP, tunnel device and IP, pod block, labels, BGP peers."""
    from labctl import inspect as ins

    try:
        lab = _find_lab(name, topology_file)
        typer.echo(ins.format(ins.rows(lab), format.value))
    except LabctlError as e:
        _fail(e)


@app.command()
def verify(
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[CheckFormat, typer.Option("--format", "-f")] = CheckFormat.table,
    wait: Annotated[float, typer.Option(help="retry failing checks for up to this many seconds")] = 5.0,
) -> None:
    """Check SSH, BGP sessions, routes, labels, placement and pod-to-pod ping; exit 0 only if all pass."""
    from labctl import verify as v

    try:
        lab = _find_lab(name, topology_file)
        checks = v.verify(lab, wait=wait)
    except LabctlError as e:
        _fail(e)
    typer.echo(v.format(checks, format.value))
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command()
def graph(
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.mermaid,
) -> None:
    """Draw the lab: LAN, nodes with physical and tunnel IPs, labels, BGP sessions by state."""
    from labctl import graph as g
    from labctl import inspect as ins

    try:
        lab = _find_lab(name, topology_file)
        data, rows = lab.data(), ins.rows(lab)
    except LabctlError as e:
        _fail(e)
    if format is GraphFormat.svg:
        from labctl import graph_svg

        typer.echo(graph_svg.svg(data, rows), nl=False)
    else:
        typer.echo(g.render(data, rows, format.value))


@app.command()
def bgp(
    node: Annotated[str | None, typer.Argument(help="one node (default: every node)")] = None,
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[CheckFormat, typer.Option("--format", "-f")] = CheckFormat.table,
) -> None:
    """Each node's BGP sessions and the routes it learned over them, read live from BIRD."""
    from labctl import bgp as b

    try:
        lab = _find_lab(name, topology_file)
        rows = b.sessions_and_routes(lab, node)
    except LabctlError as e:
        _fail(e)
    typer.echo(b.format(rows, format.value))
    if any(r["error"] for r in rows):
        raise typer.Exit(1)


@app.command()
def trace(
    src: Annotated[str, typer.Argument(help="source: workload or node name, or its IP")],
    dst: Annotated[str, typer.Argument(help="destination: workload or node name, or an IP")],
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[TraceFormat, typer.Option("--format", "-f")] = TraceFormat.text,
) -> None:
    """Follow a packet hop by hop (pod, veth, route, tunnel, peer node, pod), say why each hop, then ping."""
    from labctl import trace as t

    try:
        lab = _find_lab(name, topology_file)
        result = t.trace(lab, src, dst)
    except LabctlError as e:
        _fail(e)
    typer.echo(t.format(result, format.value))
    if not (result["reached"] and result["ping"]["ok"]):
        raise typer.Exit(1)


@app.command("exec")
def exec_(
    node: Annotated[str, typer.Argument(help="node name")],
    command: Annotated[list[str], typer.Argument(help="command to run on the node (after --)")],
    name: NameOpt = None,
) -> None:
    """Run a command on a node over SSH; its output and exit code are the command's."""
    import shlex

    from labctl import nodes

    try:
        lab = _find_lab(name, None)
        n = next((x for x in lab.data()["nodes"] if x["name"] == node), None)
        if n is None:
            raise UsageError(
                f"no node {node!r} in lab {lab.name}", f"nodes: {', '.join(x['name'] for x in lab.data()['nodes'])}"
            )
        with nodes.NodeShell(lab.dir, n) as s:
            rc, out, err = s.run(" ".join(shlex.quote(c) for c in command), timeout=600)
    except LabctlError as e:
        _fail(e)
    sys.stdout.write(out)
    sys.stderr.write(err)
    raise typer.Exit(rc)


@app.command()
def ssh(node: Annotated[str, typer.Argument(help="node name")], name: NameOpt = None) -> None:
    """Open an interactive SSH session on a node (with the lab's key and pinned host keys)."""
    import os
    import shutil

    try:
        lab = _find_lab(name, None)
        n = next((x for x in lab.data()["nodes"] if x["name"] == node), None)
        if n is None:
            raise UsageError(f"no node {node!r} in lab {lab.name}")
        ssh_cfg = n.get("ssh") or {}
        argv = ["ssh", "-F", str(lab.dir.ssh_config), "-o", "BatchMode=no", "-p", str(ssh_cfg.get("port", 22))]
        if lab.dir.ssh_key.exists():
            argv += ["-i", str(lab.dir.ssh_key)]
        elif ssh_cfg.get("key"):
            argv += ["-i", os.path.expanduser(ssh_cfg["key"])]
        if ssh_cfg.get("jump"):
            argv += ["-J", ssh_cfg["jump"]]
        argv.append(f"{ssh_cfg.get('user', 'root')}@{n['address']}")
        if shutil.which("ssh") is None:
            raise UsageError("ssh is not installed", "apt-get install openssh-client")
    except LabctlError as e:
        _fail(e)
    os.execvp("ssh", argv)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("labctl: interrupted", err=True)
        sys.exit(130)
