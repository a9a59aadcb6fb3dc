"""Observation: inspect, verify, graph, bgp, trace (live reads of a running lab)."""

from __future__ import annotations

import enum
import ipaddress
import signal
import sys
from typing import Annotated

import typer

from labctl.cli import CheckFormat, NameOpt, TableFormat, TopologyOpt, command, find_lab, stoppable
from labctl.errors import UsageError


class GraphFormat(enum.StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"
    html = "html"


class VerifyOnly(enum.StrEnum):
    builtin = "builtin"
    checks = "checks"


class TraceFormat(enum.StrEnum):
    text = "text"
    json = "json"


@command()
def inspect(
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[TableFormat, typer.Option("--format", "-f")] = TableFormat.table,
) -> None:
    """Show each live node: physical IP, tunnel device and IP, pod block, labels, BGP peers."""
    from labctl.observe import inspect as ins

    lab = find_lab(name, topology_file)
    typer.echo(ins.format(ins.rows(lab), format.value))


@command()
def verify(
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[CheckFormat, typer.Option("--format", "-f")] = CheckFormat.table,
    wait: Annotated[float, typer.Option(min=0, help="retry failing checks for up to this many seconds")] = 5.0,
    only: Annotated[
        VerifyOnly | None, typer.Option("--only", help="builtin: labctl's checks; checks: the topology's `checks:`")
    ] = None,
) -> None:
    """Check SSH, BGP, routes, VTEPs, node names, labels, placement, pod routes and ping, then the
    topology's own `checks:`; exit 0 only if all pass."""
    from labctl.observe import verify as v

    lab = find_lab(name, topology_file)
    if only is VerifyOnly.checks and not lab.model().checks:
        raise UsageError(f"lab {lab.name} has no checks", "add a `checks:` list to its topology and run `labctl up`")
    checks = v.verify(lab, wait=wait, only=only.value if only else None)
    typer.echo(v.format(checks, format.value))
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@command()
def graph(
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.mermaid,
) -> None:
    """Draw the lab: LAN, nodes with physical and tunnel IPs, labels, BGP sessions by state (html: the
    `labctl view` page as one self-contained file)."""
    from labctl.observe import graph as g
    from labctl.observe import inspect as ins

    lab = find_lab(name, topology_file)
    model, rows = lab.model(), ins.rows(lab)
    if format is GraphFormat.svg:
        from labctl.observe import graph_svg

        typer.echo(graph_svg.svg(model, rows), nl=False)
    elif format is GraphFormat.html:
        import time

        from labctl.observe import view as v

        typer.echo(v.page(v.build(model, rows) | {"time": time.time(), "took": 0}))
    else:
        typer.echo(g.render(model, rows, format.value))
    # what could be read is drawn; what could not is `?` there and named here
    for r in rows:
        if r["state"] == "unreachable":
            typer.echo(f"labctl: error: {r['error'] or r['name'] + ' unreachable'}", err=True)
    if g.unreachable(rows):
        raise typer.Exit(1)


@command()
def bgp(
    node: Annotated[str | None, typer.Argument(help="one node (default: every node)")] = None,
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[CheckFormat, typer.Option("--format", "-f")] = CheckFormat.table,
) -> None:
    """Each node's BGP sessions and the routes it learned over them, read live from BIRD."""
    from labctl.observe import bgp as b

    lab = find_lab(name, topology_file)
    rows = b.sessions_and_routes(lab, node)
    typer.echo(b.format(rows, format.value))
    for r in rows:
        if r["error"]:
            typer.echo(f"labctl: error: {r['error']}", err=True)
    if any(r["error"] for r in rows):
        raise typer.Exit(1)


@command()
def trace(
    src: Annotated[str, typer.Argument(help="source: workload or node name, or its IP")],
    dst: Annotated[str, typer.Argument(help="destination: workload or node name, or an IP")],
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    format: Annotated[TraceFormat, typer.Option("--format", "-f")] = TraceFormat.text,
    capture: Annotated[bool, typer.Option("--capture", help="tcpdump each hop's interface during a ping")] = False,
) -> None:
    """Follow a packet hop by hop (pod, veth, route, tunnel, peer node, pod), say why each hop, then ping."""
    from labctl.observe import trace as t

    if src == dst:
        raise UsageError(f"trace from {src} to itself: there is no path to follow", "name two different endpoints")
    lab = find_lab(name, topology_file)
    result = t.trace(lab, src, dst)
    if capture:
        from labctl.observe import tracecap

        with stoppable():  # TERM/HUP too: every tcpdump is stopped by its pid before labctl exits
            result = tracecap.capture(lab, result)
        text = t.format(result, format.value)
        typer.echo(tracecap.format(result, text) if format is TraceFormat.text else text)
    else:
        typer.echo(t.format(result, format.value))
    if not (result["reached"] and result["ping"]["ok"]):
        raise typer.Exit(1)


@command()
def view(
    name: NameOpt = None,
    topology_file: TopologyOpt = None,
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="0: any free port")] = 0,
    listen: Annotated[
        str, typer.Option("--listen", help="address to listen on; anything but loopback lets others connect")
    ] = "127.0.0.1",
    open_browser: Annotated[bool, typer.Option("--open", help="open the page in the default browser")] = False,
) -> None:
    """Serve a live, read-only page of the lab: networks, nodes, pods, BGP sessions by state (updated
    every 2 s), a node's routes on click, a trace between two pods. Prints the URL; Ctrl-C ends it."""
    from labctl.observe import view_http

    lab = find_lab(name, topology_file)
    server = view_http.Server(lab, listen, port)
    typer.echo(server.url)
    sys.stdout.flush()
    if not ipaddress.ip_address(listen).is_loopback:
        typer.echo(
            f"labctl: warning: listening on {listen}: anyone who can reach it and has the URL sees the lab", err=True
        )
    typer.echo(f"labctl: serving lab {lab.name} read-only; Ctrl-C to stop", err=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    # explicitly: a shell starts a background job with SIGINT ignored, and `kill -INT` should still end it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.run()
    except KeyboardInterrupt:
        typer.echo("labctl: interrupted", err=True)
        raise typer.Exit(130) from None
