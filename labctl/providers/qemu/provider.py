"""The qemu provider: labctl boots one VM per node on this host, then the vm provider's playbooks
(kubeadm, containerd, Calico) run on them over SSH, exactly as on machines someone else made.

What a VM needs before the first SSH (hostname, static address, the lab key for the `labctl` sudo
user, and a host key labctl generated and pinned in known_hosts: no trust on first use) reaches
it on a per-node config disk; see labctl/providers/qemu/image.py. The host side (bridge with the gateway
address, one tap per VM, QEMU daemonized with a pidfile, the apt proxy on the gateway) is in
labctl/providers/qemu/. The host never routes for the lab: ip_forward stays 0 and no NAT rule is added;
packages come through the lab's apt-cacher-ng, which the topology's proxy defaults to."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from labctl.errors import HostError, UsageError
from labctl.host import links, preflight, routers, sh, sshd
from labctl.host.nsshell import NsShell
from labctl.live import sshmux
from labctl.plan import names
from labctl.plan.model import LabModel, Node, Router
from labctl.providers.base import Remains, make_lab_keys
from labctl.providers.qemu import bridgefw, dns, image, machine, proxy
from labctl.providers.vm import VmProvider
from labctl.spec.schema import Qemu

SSH_READY_SECONDS = 300  # TCG on a busy 2-core host: ~25 s each, booted side by side


def host_memory_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class QemuProvider(VmProvider):
    name = "qemu"

    @staticmethod
    def _bridges(lab: LabModel | Remains) -> list[str]:
        nets = getattr(lab, "networks", None) or {}  # Remains: what is left of a lab has no networks
        return [n.bridge for n in nets.values()] or [names.bridge("lq", lab.name)]

    @property
    def down_playbook(self) -> str | None:
        """The reset role runs for real when every VM runs and has finished booting. A VM that is
        gone, or still booting (an `up` interrupted at boot), is not waited for: its disk goes with
        it, and no play ever ran on it."""
        try:
            model = self.lab.model()
        except (OSError, ValueError):
            return None
        dirs = [self.dir.node_dir(n.name) for n in model.nodes]
        return "vm-down.yml" if all(machine.running(d) and machine.booted(d) for d in dirs) else None

    @staticmethod
    def _cfg(model: LabModel) -> Qemu:
        return model.qemu or Qemu()

    def _proxy_dir(self) -> Path:
        return self.dir.root / "proxy"

    def _dns_dir(self) -> Path:
        return self.dir.root / "dns"

    def _host_mark(self) -> Path:
        """Written before the lab's first bridge: the links named after this lab are this home's. A lab
        of the same name in another labctl home has the same link names; its `down` must not take ours."""
        return self.dir.root / "host-links"

    def _owns_links(self) -> bool:
        try:
            return self._host_mark().exists() or "qemu" in self.lab.state()  # or made before the mark existed
        except (OSError, ValueError):
            return self._host_mark().exists()

    def host_shell(self, node: Node | Router):
        """The lab routers are namespaces of this host; the nodes are VMs, reached over SSH only."""
        return NsShell(names.netns("lq", self.lab.name, node.name), node) if node.role == "router" else None

    # -- checks before anything is created -------------------------------------------------

    def checks(self, model: LabModel) -> list[str]:
        """What validate and `up --dry-run` refuse as `up` does: VMs larger than this host's memory,
        CIDRs overlapping a route the host has (reading both needs no root)."""
        cfg, total = self._cfg(model), host_memory_mib()
        for role in ("control_plane", "worker"):
            mem = getattr(cfg, role).memory
            if total is not None and mem > total:
                raise UsageError(
                    f"qemu.{role}.memory {mem} MiB is more than this host's memory ({total} MiB)",
                    "e.g. 2048 for a control plane, 1536 for a worker",
                )
        preflight.check_routes(model, set(self._bridges(model)))
        return []

    def preflight(self, model: LabModel) -> list[str]:
        self.checks(model)
        preflight.safe_dir(self.dir.root, "QEMU arguments")
        preflight.need_root("the qemu provider", "bridge and taps")
        routers = model.routers or []
        # lab routers are namespaces of this host with their own sshd and, with an asn, BIRD (as netns's)
        need = [*machine.TOOLS, proxy.DAEMON, dns.DAEMON, *(("nsenter", sshd.SSHD) if routers else ())]
        need += ["bird", "birdc"] if any(r.asn is not None for r in routers) else []
        preflight.need_tools(
            need,
            "apt-get install -y qemu-system-x86 qemu-utils mmdebstrap e2fsprogs apt-cacher-ng dnsmasq-base bird2 "
            "openssh-server (`make qemu-deps`)",
        )
        preflight.socket_paths(self.dir.root, [r.bird_socket for r in routers])
        cfg = self._cfg(model)
        if cfg.image not in image.RECIPES and shutil.which(machine.SEED_TOOL) is None:
            raise HostError(
                f"{machine.SEED_TOOL} is missing: a cloud image ({cfg.image}) gets its settings from a NoCloud seed",
                "apt-get install -y cloud-image-utils (`make qemu-deps`)",
            )
        if any(machine.link_exists(b) for b in self._bridges(model)) and not self._owns_links():
            raise HostError(
                f"a qemu lab named {model.name!r} is already running from another labctl home",
                "take it down there, or rename this lab",
            )
        preflight.check_routes(model, set(self._bridges(model)))
        self._check_memory(model, cfg)
        if not bridgefw.bridged_through_iptables():
            return []
        note = bridgefw.warning(bridgefw.forward_chain(), self._bridges(model))
        return [note] if note else []

    def _check_memory(self, model: LabModel, cfg: Qemu) -> None:
        """The VMs still to boot must fit in the memory the host has available now (running ones are in use)."""
        vms = {n.name: self._size(cfg, n).memory for n in model.nodes if not machine.running(self.dir.node_dir(n.name))}
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return
        short = machine.memory_shortfall(vms, meminfo)
        if short:
            raise HostError(short, "give the VMs less memory (qemu.control_plane/worker.memory) or stop what uses it")

    @staticmethod
    def _size(cfg: Qemu, node):
        return cfg.control_plane if node.role == "control-plane" else cfg.worker

    # -- bring up --------------------------------------------------------------------------

    def bootstrap(self, model: LabModel, progress) -> dict:
        """Image, keys, bridge, taps, proxy, disks, VMs; idempotent (a killed VM boots again).
        Returns the QEMU pid per node."""
        cfg = self._cfg(model)
        cloud = cfg.image not in image.RECIPES  # a path, its sha256 checked by validation
        base = self._image(cfg, cloud, progress)
        self.lab.checkpoint()
        accel = self._accel(cfg, None if cloud else base, progress)
        self._host_side(model, cfg)
        pids, booted = self._boot(model, cfg, base, cloud, accel)
        self.lab.save_state(qemu={"accel": accel, "image": str(base), "pids": pids})
        if booted:
            progress.info(f"  booting {', '.join(booted)} ({accel}); waiting for SSH")
        t0 = time.monotonic()
        late = machine.wait_ssh(
            model.nodes, SSH_READY_SECONDS, lambda n: machine.running(self.dir.node_dir(n.name)), self.lab.checkpoint
        )
        if late:
            raise HostError(
                f"no SSH from {', '.join(late)} after {SSH_READY_SECONDS} s",
                f"see {self.dir.node_dir(late[0]) / 'console.log'}",
            )
        if booted:
            progress.info(f"  SSH up on every node in {time.monotonic() - t0:.1f} s")
        return pids

    @staticmethod
    def _image(cfg: Qemu, cloud: bool, progress) -> Path:
        """The base the nodes' disks sit on: a cloud image file, or labctl's image dir (built if missing)."""
        if cloud:
            return Path(cfg.image).expanduser().resolve()
        base = image.get(cfg.image)
        if base is None:
            t0 = time.monotonic()
            base, _ = image.build(cfg.image, progress)
            progress.info(f"  image {cfg.image} built in {time.monotonic() - t0:.0f} s ({base})")
        return base

    def _host_side(self, model: LabModel, cfg: Qemu) -> None:
        """Keys, the lab's bridge(s) (and routers), the bridge firewall's accept, the apt proxy and DNS."""
        self._keys(model)
        self._host_mark().touch()
        if model.networks:
            self._networks(model)
            hosts = [net.host for net in model.networks.values()]
        else:
            gw = model.network.gateway
            links.ensure_bridge(names.bridge("lq", model.name), gw, int(model.network.lan.split("/")[1]))
            hosts = [gw]
        for br in self._bridges(model):
            bridgefw.accept(br, model.name)
        proxy.start(self._proxy_dir(), hosts, cfg.internet)
        addresses = {n.name: n.address for n in model.nodes}
        dns.start(self._dns_dir(), hosts, self._bridges(model), addresses, cfg.internet, proxy.NAME)

    def _boot(self, model: LabModel, cfg: Qemu, base: Path, cloud: bool, accel: str) -> tuple[dict, list[str]]:
        """Each node's tap, disk, settings disk and QEMU (those not running yet boot); (pids, booted)."""
        backing, fmt = (base, machine.image_format(base)) if cloud else (base / "base.raw", "raw")
        pub = Path(str(self.dir.ssh_key) + ".pub").read_text()
        pids, booted = {}, []
        for n in model.nodes:
            self.lab.checkpoint()
            nd = self.dir.node_dir(n.name)
            machine.ensure_tap(model.name, n.name, self.bridge(model.name, n.network))
            if not machine.running(nd):
                machine.overlay(backing, fmt, nd / "disk.qcow2")
                if cloud:
                    machine.seed_iso(nd, n, model, pub)
                else:
                    machine.config_disk(nd, n, model, pub)
                booted.append(n.name)
            boot = machine.cloud_boot(nd) if cloud else machine.kernel_boot(base, nd)
            size = self._size(cfg, n)
            pids[n.name] = machine.start(model.name, n, nd, boot, accel, size.cpus, size.memory)
        return pids, booted

    def _networks(self, model: LabModel) -> None:
        """`networks:`: a bridge per network with the host's address on it (SSH and the proxy), routers as
        namespaces joined to the bridges, forwarding inside them only, each with its sshd (`labctl exec`, `ssh`
        and the live reads reach it like a node) and, with an asn, BIRD (ToR peering): labctl/host/routers.py and
        labctl/host/sshd.py, as for netns."""
        name = model.name
        netns_of = lambda r: names.netns("lq", name, r)  # noqa: E731
        members = routers.lan_members(model, lambda n: machine.mac(name, n.name))
        routers.ensure_bridges(model, members)
        routers.build(
            model,
            members,
            netns_of,
            lambda r, net: machine.router_veth(name, r, net),
            self.lab.checkpoint,
        )
        if model.routers:
            sshd.namespace_sshd(self.lab, model, model.routers, netns_of)
            routers.ensure_bird(self.dir, model, netns_of)

    def _accel(self, cfg: Qemu, base: Path | None, progress) -> str:
        """`base`: labctl's image, whose kernel the KVM probe boots (a cloud image has no loose kernel:
        the probe borrows labctl's when it is built)."""
        if cfg.accel != "auto":
            return cfg.accel
        base = base or next((b for b in map(image.get, image.RECIPES) if b is not None), None)
        if base is None:
            progress.warn("VMs run under TCG: no kernel to probe KVM with (`labctl image build`, or qemu.accel: kvm)")
            return "tcg"
        ok, why = machine.probe_kvm(base)
        if ok:
            return "kvm"
        progress.warn(f"KVM unusable here, VMs run under TCG (software emulation, several times slower): {why}")
        return "tcg"

    def _keys(self, model: LabModel) -> None:
        """The lab key and one host key per node and router, pinned in known_hosts before any VM boots."""
        make_lab_keys(self.dir, model.name, model.speakers)

    # -- tear down -------------------------------------------------------------------------

    def teardown(self, lab: LabModel | Remains, progress) -> None:
        """Remove whatever of the lab exists; one failure does not stop the rest."""
        errors: list[str] = []
        sshmux.close_masters(self.dir)
        stuck = machine.stop([self.dir.node_dir(n.name) for n in lab.nodes])
        if stuck:
            errors.append(f"QEMU of {', '.join(stuck)} did not stop")
        for stop in (proxy.stop, dns.stop):
            try:
                stop(self._proxy_dir() if stop is proxy.stop else self._dns_dir())
            except HostError as e:
                errors.append(str(e))
        if self._owns_links():  # else they are another home's lab of this name (or none at all)
            stuck = machine.remove_routers(lab.name, lab.routers or [])
            if stuck:
                errors.append(f"processes {', '.join(map(str, stuck))} in the routers' namespaces did not stop")
            for br in self._bridges(lab):
                bridgefw.remove(br, lab.name)
            machine.remove_links(lab.name, [n.name for n in lab.nodes])
            for link in machine.lab_links(lab.name):  # `networks:` labs: a bridge per network
                sh.run(["ip", "link", "del", link], check=False)
            left = machine.lab_links(lab.name)
            if left:
                errors.append(f"links {', '.join(left)} still present")
        if errors:
            raise HostError(f"teardown of lab {lab.name!r} incomplete: {'; '.join(errors)}", "run `labctl down` again")

    def remove_nodes(self, model: LabModel, names: list[str], progress) -> None:
        gone = [n for n in model.nodes if n.name in names]
        for n in gone:
            progress.info(f"  removing node {n.name}")
        machine.stop([self.dir.node_dir(n.name) for n in gone])
        machine.remove_links(model.name, [n.name for n in gone])
        # the bridge stays: remove_links takes it too, so put it back for the nodes that remain
        if not model.networks:  # (a bridge per network is not the lab's bridge: untouched)
            gw = model.network.gateway
            links.ensure_bridge(self.bridge(model.name), gw, int(model.network.lan.split("/")[1]))
        for n in gone:
            shutil.rmtree(self.dir.node_dir(n.name), ignore_errors=True)
