"""Seeing and breaking the network on purpose: capture, impair, fail, repair."""

from __future__ import annotations

import enum
import sys
from typing import Annotated

import typer

from labctl.cli import NameOpt, command, find_lab, stoppable
from labctl.errors import UsageError


@command()
def capture(
    target: Annotated[
        str, typer.Argument(help="NODE[:IFACE], ROUTER[:IFACE] or WORKLOAD[:IFACE] (IFACE `any`: all of them)")
    ],
    count: Annotated[int | None, typer.Option("--count", "-c", help="stop after this many packets")] = None,
    filter: Annotated[str | None, typer.Option("--filter", help="BPF filter, as tcpdump takes it")] = None,
    write: Annotated[str | None, typer.Option("--write", "-w", help="write a pcap file ('-': pcap to stdout)")] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="stop after this many seconds")] = None,
    name: NameOpt = None,
) -> None:
    """tcpdump on a node or in a pod: one decoded line per packet (outer | inner headers of tunnelled
    packets), optionally a pcap for Wireshark. Ctrl-C stops it (exit 130) and tcpdump with it."""
    from labctl.live import nodes
    from labctl.observe import capture as cap

    if count is not None and count < 1:
        raise UsageError(f"--count {count}: must be at least 1")
    if duration is not None and not 0 < duration <= 86400:
        raise UsageError(f"--duration {duration}: must be more than 0 and at most 86400 seconds")
    to_stdout = write == "-"
    pcap = cap.PcapFile(write) if write and not to_stdout else None  # refused before anything starts
    lab = find_lab(name, None)
    t = cap.target(lab.model(), target)
    text = sys.stderr if to_stdout else sys.stdout  # decoded lines never mix into a pcap stream

    def chunk(b: bytes) -> None:
        if pcap is not None:
            pcap.write(b)
        elif to_stdout:
            sys.stdout.buffer.write(b)
            sys.stdout.buffer.flush()

    def pkt(p: dict) -> None:
        print(f"{cap.stamp(p['time'])} {p['line']}", file=text, flush=True)

    with nodes.NodeShell(lab.dir, t["node"]) as shell, stoppable():
        bpf = cap.preflight(shell, t, filter)
        if pcap is not None:
            pcap.open()
        typer.echo(f"capturing on {t['label']} (Ctrl-C to stop)", err=True)
        try:
            n = cap.run(shell, t, count, bpf, duration, chunk, pkt)
        finally:
            if pcap is not None:
                pcap.close()
    typer.echo(f"{n} packet(s) captured on {t['label']}" + (f", written to {write}" if write else ""), err=True)


@command()
def impair(
    target: Annotated[str, typer.Argument(help="NODE[:IFACE] (default: the node's LAN NIC)")],
    delay: Annotated[str | None, typer.Option(help="added delay, e.g. 50ms (netem)")] = None,
    jitter: Annotated[str | None, typer.Option(help="delay variation, e.g. 5ms (netem)")] = None,
    loss: Annotated[str | None, typer.Option(help="random loss, e.g. 5% (netem)")] = None,
    rate: Annotated[str | None, typer.Option(help="rate limit, e.g. 10mbit (tbf)")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="remove the impairment")] = False,
    name: NameOpt = None,
) -> None:
    """Delay, jitter, loss (tc netem) or a rate limit (tc tbf) on a node's interface; --clear removes it."""
    from labctl import providers
    from labctl.cli import find_node
    from labctl.live import impair as imp
    from labctl.live import nodes
    from labctl.spec import netem

    if clear and any(x is not None for x in (delay, jitter, loss, rate)):
        raise UsageError("--clear takes no --delay/--jitter/--loss/--rate")
    s = None if clear else netem.spec(delay, jitter, loss, rate)
    lab = find_lab(name, None)
    node_name, _, iface = target.partition(":")
    n = find_node(lab, node_name)
    iface = iface or n.interface
    prov = providers.get(lab.model().provider, lab)
    with imp.shell(prov, lab.dir, n) as shell:
        imp.apply(shell, n, iface, s)
        _, out, _ = shell.run(nodes.sudo(n) + netem.show_command(iface))
    typer.echo(f"{node_name}:{iface}: {netem.describe(out) or 'no impairment'}")


class FaultKind(enum.StrEnum):
    bird = "bird"
    link = "link"
    node = "node"


@command()
def fail(
    node: Annotated[str, typer.Argument(help="the node to break")],
    kind: Annotated[FaultKind, typer.Argument(help="bird: stop its BIRD; link: its LAN NIC down; node: freeze it")],
    name: NameOpt = None,
) -> None:
    """Break a node on purpose and watch the network react (`labctl bgp`, `verify`); `repair` or `up` undoes it."""
    from labctl.app import faults

    typer.echo(faults.fail(find_lab(name, None), node, kind.value))


@command()
def repair(
    node: Annotated[str, typer.Argument(help="the node to repair")],
    kind: Annotated[FaultKind | None, typer.Argument(help="bird | link | node (default: what `fail` broke)")] = None,
    name: NameOpt = None,
) -> None:
    """Undo `labctl fail` on a node (BIRD started again, NIC up, processes continued)."""
    from labctl.app import faults

    typer.echo(faults.repair(find_lab(name, None), node, kind.value if kind else None))
