"""The topology's checks beyond its fields' types: `check()` returns every problem, each at its path.

Networks and routers are checked in rules_net.py, the optional blocks in rules_extra.py."""

from __future__ import annotations

import re
from ipaddress import IPv4Address

from labctl.spec import providers
from labctl.spec.rules_extra import impairment_problems, lab_check_problems, qemu_problems
from labctl.spec.rules_net import net_problems, racks_problems
from labctl.spec.schedule import LabelIndex
from labctl.spec.schema import (
    CALICO_K8S,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    HOSTNAME,
    IFNAME,
    LAB_NAME,
    LABEL_NAME,
    SUPPORTED_K8S,
    USERNAME,
    Ssh,
    Topology,
)
from labctl.spec.yamlsrc import Problem


def _label_problems(labels: dict[str, str], path: tuple) -> list[Problem]:
    out = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
            out.append(
                Problem(
                    path + (key,),
                    f"label key prefix {prefix!r} is not a DNS subdomain",
                    "lowercase letters, digits, '-' and '.'",
                )
            )
        elif not LABEL_NAME.fullmatch(name):
            out.append(
                Problem(
                    path + (key,),
                    f"label key {key!r} is not valid in Kubernetes",
                    "name part: 1-63 of [A-Za-z0-9-_.], alphanumeric at both ends",
                )
            )
        if value and not LABEL_NAME.fullmatch(value):
            out.append(
                Problem(
                    path + (key,),
                    f"label value {value!r} is not valid in Kubernetes",
                    "0-63 of [A-Za-z0-9-_.], alphanumeric at both ends",
                )
            )
    return out


def _version_problems(t: Topology) -> list[Problem]:
    out = []
    m = re.fullmatch(r"1\.([0-9]+)(?:\.([0-9]+))?", t.kubernetes.version)
    kminor = int(m.group(1)) if m else None
    if not m:
        out.append(
            Problem(
                ("kubernetes", "version"),
                f"{t.kubernetes.version!r} is not 1.MINOR or 1.MINOR.PATCH",
                'for example "1.34"',
            )
        )
    elif kminor not in SUPPORTED_K8S:
        out.append(
            Problem(
                ("kubernetes", "version"),
                f"Kubernetes {t.kubernetes.version} is not supported",
                f"supported: 1.{SUPPORTED_K8S.start}-1.{SUPPORTED_K8S.stop - 1}",
            )
        )
    c = re.fullmatch(r"v3\.([0-9]+)\.([0-9]+)", t.calico.version)
    if not c:
        out.append(
            Problem(
                ("calico", "version"), f"{t.calico.version!r} is not a Calico release vX.Y.Z", "for example v3.30.7"
            )
        )
    elif int(c.group(1)) not in CALICO_K8S:
        out.append(
            Problem(("calico", "version"), f"Calico {t.calico.version} is not supported", "supported: v3.29.x-v3.32.x")
        )
    elif kminor in SUPPORTED_K8S and kminor not in CALICO_K8S[int(c.group(1))]:
        k = CALICO_K8S[int(c.group(1))]
        out.append(
            Problem(
                ("calico", "version"),
                f"Calico {t.calico.version} is not tested with Kubernetes 1.{kminor}",
                f"it supports 1.{k.start}-1.{k.stop - 1}",
            )
        )
    return out


def _node_problems(t: Topology) -> list[Problem]:
    out = []
    cps = [n for n, node in t.nodes.items() if node.role == "control-plane"]
    if len(cps) != 1:
        out.append(
            Problem(
                ("nodes",),
                f"need exactly one control-plane node, found {len(cps)}" + (f" ({', '.join(cps)})" if cps else ""),
                "set role: control-plane on one node",
            )
        )
    seen: dict[IPv4Address, str] = {}
    lans = t.lans
    for name, node in t.nodes.items():
        path = ("nodes", name)
        if t.network is not None:
            lan, gateway, where = t.network.lan, t.gateway, "network.lan"
        elif node.network in lans:
            lan, gateway, where = lans[node.network].lan, lans[node.network].gateway, f"network {node.network}"
        else:
            lan = None  # reported by racks_problems (rules_net)
        if not DNS_LABEL.fullmatch(name):
            out.append(
                Problem(
                    path,
                    f"node name {name!r} is not a DNS-1123 label",
                    "lowercase letters, digits and '-', 1-63 chars, alphanumeric at both ends",
                )
            )
        a = node.address
        if lan is None:
            pass
        elif a not in lan:
            hint = providers.traits(t.provider).lan_hint
            out.append(Problem(path + ("address",), f"{a} is not inside {where} {lan}", hint))
        elif a in (lan.network_address, lan.broadcast_address):
            out.append(Problem(path + ("address",), f"{a} is the network or broadcast address of {lan}", None))
        elif a == gateway:
            out.append(Problem(path + ("address",), f"{a} is the LAN gateway", "pick another address"))
        elif t.network is None and a == lans[node.network].host:
            out.append(Problem(path + ("address",), f"{a} is the host's address on {node.network}", "pick another"))
        if a in seen:
            out.append(Problem(path + ("address",), f"{a} is already used by node {seen[a]}", None))
        seen.setdefault(a, name)
        ifname = t.defaults.interface if node.interface is None else node.interface
        ipath = path + ("interface",) if node.interface is not None else ("defaults", "interface")
        if not IFNAME.fullmatch(ifname) or ifname in ("lo", "tunl0", "vxlan.calico", "all", "default"):
            out.append(
                Problem(
                    ipath,
                    f"{ifname!r} is not a usable interface name",
                    "1-15 of [A-Za-z0-9_.-], not lo/tunl0/vxlan.calico",
                )
            )
        out += _label_problems(node.labels, path + ("labels",))
        if node.ssh is not None:
            out += _ssh_problems(node.ssh, path + ("ssh",))
    return out + _ssh_problems(t.defaults.ssh, ("defaults", "ssh"))


def _ssh_problems(ssh: Ssh, path: tuple) -> list[Problem]:
    out = []
    if not USERNAME.fullmatch(ssh.user):
        out.append(Problem(path + ("user",), f"{ssh.user!r} is not a valid user name", None))
    if ssh.jump is not None:
        m = re.fullmatch(r"(?:([a-z_][a-z0-9_.-]*)@)?([^@:\s]+)(?::([0-9]+))?", ssh.jump)
        if not m or not HOSTNAME.fullmatch(m.group(2)) or (m.group(3) and not 0 < int(m.group(3)) < 65536):
            out.append(Problem(path + ("jump",), f"{ssh.jump!r} is not [user@]host[:port]", None))
    if not ssh.key or "\n" in ssh.key or "\0" in ssh.key:
        out.append(Problem(path + ("key",), "not a usable file path", None))
    return out


def _rr_problems(t: Topology) -> list[Problem]:
    out = []
    rrs = t.calico.route_reflectors
    for i, name in enumerate(rrs):
        if name not in t.nodes:
            out.append(
                Problem(
                    ("calico", "route_reflectors", i),
                    f"{name!r} is not a node of this lab",
                    f"nodes: {', '.join(list(t.nodes)[:8])}{', ...' if len(t.nodes) > 8 else ''}",
                )
            )
        elif rrs.index(name) != i:
            out.append(Problem(("calico", "route_reflectors", i), f"{name!r} is listed twice", None))
    try:
        IPv4Address(t.calico.rr_cluster_id)
    except ValueError:
        out.append(
            Problem(("calico", "rr_cluster_id"), f"{t.calico.rr_cluster_id!r} is not IPv4-formatted", "e.g. 244.0.0.1")
        )
    return out


def _workload_problems(t: Topology) -> list[Problem]:
    out = []
    index = LabelIndex(t)
    names: set[str] = set()
    for i, w in enumerate(t.workloads or []):
        path = ("workloads", i)
        if not DNS_LABEL.fullmatch(w.name) or len(w.name) > 40:
            out.append(
                Problem(
                    path + ("name",), f"{w.name!r} is not a valid workload name", "a DNS-1123 label of at most 40 chars"
                )
            )
        if w.name in names:
            out.append(Problem(path + ("name",), f"workload {w.name!r} is declared twice", None))
        names.add(w.name)
        out += _label_problems(w.node_selector, path + ("node_selector",))
        if not index.matching(w.node_selector):
            out.append(
                Problem(path + ("node_selector",), f"{w.node_selector} matches no node", "check the nodes' labels")
            )
    return out


PROXY_URL = re.compile(r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:@\[\]-]+(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$")
NO_PROXY = re.compile(r"^[A-Za-z0-9._:/*-]+$")


def _proxy_problems(t: Topology) -> list[Problem]:
    out = []
    if t.proxy is None:
        return out
    for key in ("http", "https"):
        url = getattr(t.proxy, key)
        if url is not None and not PROXY_URL.match(url):
            out.append(Problem(("proxy", key), f"{url!r} is not an http(s):// URL", "e.g. http://proxy.example:3128"))
    for i, entry in enumerate(t.proxy.no_proxy):
        if not NO_PROXY.match(entry):
            out.append(Problem(("proxy", "no_proxy", i), f"{entry!r} is not a host, domain or CIDR", None))
    return out


def check(t: Topology) -> list[Problem]:
    name = (
        []
        if LAB_NAME.fullmatch(t.name)
        else [
            Problem(
                ("name",),
                f"{t.name!r} does not match the pattern ^[a-z][a-z0-9-]{{0,19}}$",
                "lowercase letter first, then up to 19 of [a-z0-9-]",
            )
        ]
    )
    racks = racks_problems(t)
    if t.network is None and not t.networks:
        return name + racks
    return (
        name
        + racks
        + _proxy_problems(t)
        + _rr_problems(t)
        + _version_problems(t)
        + net_problems(t)
        + _node_problems(t)
        + _workload_problems(t)
        + qemu_problems(t)
        + impairment_problems(t)
        + lab_check_problems(t)
    )
