"""Lab routers (`networks:`): namespaces between the networks, read over SSH like nodes."""

from __future__ import annotations

from labctl import bird, fanout, iproute, providers
from labctl import nodes as live
from labctl.errors import LabctlError
from labctl.model import LabModel, Router


def read(lab, r: Router) -> dict:
    """A lab router's kernel routes and, when it speaks BGP, its sessions (None: it runs no BIRD)."""
    prov = providers.get("netns")
    try:
        with live.NodeShell(lab.dir, r) as s:
            _, out, _ = s.run("ip -j -4 route show")
            got = {"routes": iproute.loads(out), "sessions": None, "error": ""}
            if r.asn is not None:
                _, out, _ = s.run(f"{prov.birdc(r)} show protocols")
                got["sessions"] = bird.sessions(out) if bird.running(out) else []
            return got
    except LabctlError as e:
        return {"routes": [], "sessions": None, "error": str(e)}


def read_all(lab, model: LabModel) -> dict:
    routers = model.routers or []
    return dict(zip([r.name for r in routers], fanout.each(lambda r: read(lab, r), routers), strict=True))


def inspect_row(r: Router, got: dict) -> dict:
    """A router as a row of `labctl inspect`: its interfaces and BGP, no tunnel, block or labels."""
    ok = not got["error"]
    sessions = got["sessions"] or []
    return {
        "name": r.name,
        "role": "router",
        "state": "running" if ok else "unreachable",
        "hostname": r.name if ok else None,
        "interface": ",".join(i.ifname for i in r.interfaces),
        "physical_ip": ",".join(f"{i.address}/{i.prefixlen}" for i in r.interfaces),
        "tunnel_device": "",
        "tunnel_ip": "",
        "block": "",
        "labels": {},
        "bgp": {
            "established": sum(1 for s in sessions if s.established) if ok else None,
            "expected": len(r.peers),
            "peers": [{"name": s.name, "state": s.state, "info": s.info, "since": s.since} for s in sessions],
        },
        "error": got["error"],
        "impair": None,
        "fault": "",  # `labctl fail` acts on nodes only
    }
