"""What a provider that builds on this host (netns, qemu) checks before it creates anything: root, its
tools, a lab dir usable in configs and socket paths, no overlap with the host's routes."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
from pathlib import Path

from labctl.errors import HostError, UsageError
from labctl.host import sh
from labctl.plan.model import LabModel

# the lab dir is interpolated unquoted into shell scripts and into sshd/BIRD/ansible/QEMU arguments:
# allow only characters that need no quoting
SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]+")
SOCKET_PATH_MAX = 107  # a Unix socket's path (BIRD's control socket, ssh's ControlPath)


def need_root(what: str, why: str = "") -> None:
    if os.geteuid() != 0:
        raise HostError(f"{what} needs root" + (f" ({why})" if why else ""), "run it with sudo")


def need_tools(tools, hint: str) -> None:
    """Each tool on the PATH (or in /usr/sbin, which a sudo PATH may lack), else one error naming all."""
    missing = [t for t in tools if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        raise HostError(f"missing tools: {', '.join(missing)}", hint)


def safe_dir(root: Path, where: str) -> None:
    if not SAFE_PATH.fullmatch(str(root)):
        raise UsageError(
            f"the lab dir {str(root)!r} has characters unsafe in {where}",
            "set LABCTL_HOME to a path of [A-Za-z0-9_./-] only",
        )


def socket_paths(root: Path, paths) -> None:
    longest = max(map(str, paths), key=len, default="")
    if len(longest) > SOCKET_PATH_MAX:
        raise HostError(
            f"the lab dir {root} is too deep for Unix socket paths ({longest})",
            "set LABCTL_HOME to a shorter directory",
        )


def check_routes(model: LabModel, ours: str | set[str]) -> None:
    """Refuse the LabModel's CIDRs that overlap a route the host already has (but the lab's own bridges',
    `ours`)."""
    ours = {ours} if isinstance(ours, str) else ours
    nets = model.networks or {}
    lans = {f"networks.{k}.lan": v.lan for k, v in nets.items()} or {"network.lan": model.network.lan}
    mine = {
        **lans,
        "kubernetes.pod_subnet": model.kubernetes.pod_subnet,
        "kubernetes.service_subnet": model.kubernetes.service_subnet,
        "calico.pool": model.calico.pool,
    }
    routes = json.loads(sh.run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    for r in routes:
        dst = r.get("dst", "")
        if dst in ("default", "") or r.get("dev") in ours or r.get("type") in ("broadcast",):
            continue
        if r.get("type") == "local" and dst.startswith("127."):
            continue
        try:
            net = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        for field, cidr in mine.items():
            if net.overlaps(ipaddress.IPv4Network(cidr)):
                raise HostError(
                    f"{field} {cidr} overlaps the host route {dst} dev {r.get('dev', '?')}",
                    "pick CIDRs this host does not use",
                )
