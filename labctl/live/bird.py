"""BIRD's CLI output, parsed in one place: `show protocols [all]` and `show route [for X] all`.

Two formats reach us: BIRD 2 (`birdc` on netns nodes) and Calico's BIRD 1.6 fork (`birdcl` inside
calico-node on vm labs). They differ in the route lines (BIRD 1.6 puts the next hop on the prefix
line and the preference as (100/0)); the protocol table is the same shape."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A protocol row of `show protocols [all]`: name, proto, table, state, since (a time, or a date and
# a time), info
PROTO_ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d\S*(?: \d\S*)?)\s*(.*?)\s*$")

# A route's first line in `show route all`, optional prefix first.
# BIRD 2:   192.168.0.0/24  unicast [Mesh_10_88_22_1 19:56:19.791] * (100) [i]
# BIRD 1.6: 192.168.77.0/26 via 10.0.1.6 on ens5 [Mesh_10_0_1_6 10:01:09] * (100/0) [i]
#           (the IGP metric after the slash is `-` or `?` when the next hop does not resolve)
ROUTE_ROW = re.compile(
    r"^(?P<prefix>\S+)?\s+(?P<kind>via \S+ on \S+|dev \S+|\w+)\s+\[(?P<proto>\S+)\s+[^\]]*\]\s*(?P<best>\*)?\s*"
    r"\((?P<pref>\d+)(?:/[-?\d]+)?\)"
)


@dataclass
class Session:
    """Peer name, state and info of one BGP protocol as BIRD shows it."""

    name: str
    state: str
    info: str
    since: str = ""

    @property
    def established(self) -> bool:
        return self.info.startswith("Established")


def running(text: str) -> bool:
    """The CLI answered: its greeting is "BIRD 2.0.12 ready." (or "BIRD v0.3.3+birdv1.6.8 ready.")."""
    return "BIRD" in text and "ready" in text


def sessions(text: str) -> list[Session]:
    """Rows of `show protocols` whose protocol is BGP."""
    rows = (PROTO_ROW.match(line) for line in text.splitlines())
    return [Session(m[1], m[4], m[6], m[5]) for m in rows if m and m[2] == "BGP"]


def session_type(name: str, description: str = "") -> str:
    """Calico names its BIRD protocols: Mesh_<ip> for the node-to-node mesh, Node_/Global_<ip> for
    BGPPeer resources; a route reflector is only recognisable by name or description."""
    if name.startswith("Mesh_"):
        return "mesh"
    if "rr" in name.lower().split("_") or "reflector" in description.lower():
        return "rr"
    if description.startswith("ToR"):  # labctl's ToR sessions (bgp: tor): node <-> its rack's router
        return "tor"
    return "peer"


_DETAIL_KEYS = {
    "Neighbor address": "peer_address",
    "Neighbor AS": "peer_as",
    "Description": "description",
    "BGP state": "bgp_state",
    "Last error": "last_error",
}


def protocols_all(text: str) -> list[dict]:
    """BGP sessions from `show protocols all` (or plain `show protocols`, then without peer
    address): the row gives state/since/info, the indented block the neighbor and BGP state."""
    out: list[dict] = []
    cur: dict | None = None
    for line in text.splitlines():
        if not line.strip() or line.lower().startswith(("bird ", "name ")):
            continue
        if not line[0].isspace():
            m = PROTO_ROW.match(line)
            cur = None
            if m and m[2] == "BGP":
                cur = {"name": m[1], "type": "", "peer_address": "", "description": "", "state": m[4]}
                cur |= {"since": m[5], "info": m[6], "bgp_state": m[6].split()[0] if m[6] else "", "last_error": ""}
                cur["peer_as"] = ""
                out.append(cur)
            continue
        key, sep, value = line.strip().partition(":")
        if cur is not None and sep and key in _DETAIL_KEYS:
            cur[_DETAIL_KEYS[key]] = value.strip()
    for s in out:
        s["type"] = session_type(s["name"], s["description"])
        if not s["peer_address"]:
            # plain `show protocols` has no neighbor; Calico encodes it in the name (Mesh_10_12_22_2)
            m = re.search(r"_(\d+)_(\d+)_(\d+)_(\d+)$", s["name"])
            s["peer_address"] = ".".join(m.groups()) if m else ""
    return out


def _route(prefix: str, m: re.Match) -> dict:
    kind = m["kind"]
    r = {
        "prefix": prefix,
        "kind": "unicast" if kind.startswith(("via ", "dev ")) else kind,  # unicast, blackhole, ...
        "protocol": m["proto"],
        "primary": bool(m["best"]),
        "preference": int(m["pref"]),
        "source": "",  # BGP, static, device, ... from the Type: line
        "next_hop": "",
        "gateway": "",
        "device": "",
        "as_path": "",
    }
    _next_hop(r, kind)
    return r


def _next_hop(r: dict, text: str) -> None:
    parts = text.split()
    if parts[0] == "via":
        r["gateway"] = parts[1]
        if "on" in parts:
            r["device"] = parts[parts.index("on") + 1]
    elif parts[0] == "dev":
        r["device"] = parts[1]


def routes(text: str) -> list[dict]:
    """Routes from `show route all`. A prefix line is followed by tab-indented next hops (BIRD 2:
    "via IP on DEV" or "dev DEV") and attributes ("Type: BGP univ", "BGP.next_hop: IP"); further
    routes for the same prefix start with whitespace instead of the prefix."""
    out: list[dict] = []
    cur: dict | None = None
    prefix = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith(("BIRD ", "Table ")):
            continue
        m = ROUTE_ROW.match(line)
        if m and (m["prefix"] or not line.startswith("\t")):
            prefix = m["prefix"] or prefix
            cur = _route(prefix, m)
            out.append(cur)
            continue
        if cur is None:
            continue
        s = line.strip()
        if s.startswith(("via ", "dev ")):
            _next_hop(cur, s)
        elif s.startswith("Type:"):
            cur["source"] = s.split()[1]
        elif s.startswith("BGP.next_hop:"):
            cur["next_hop"] = (s.split(":", 1)[1].split() or [""])[0]
        elif s.startswith("BGP.as_path:"):
            cur["as_path"] = s.split(":", 1)[1].strip()
    for r in out:
        r["next_hop"] = r["next_hop"] or r["gateway"]
    return out
