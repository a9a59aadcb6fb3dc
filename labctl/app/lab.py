"""A lab: its directory, state and lock, and the up/down sequences that both providers share."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import threading
from pathlib import Path

from labctl import providers
from labctl.app import decided, faults
from labctl.app.clock import now
from labctl.errors import HostError, Interrupted, LabctlError, LockedError, UsageError
from labctl.live import impair, sshmux
from labctl.outputs import render, runner
from labctl.plan import diff as reconcile
from labctl.plan import layout
from labctl.plan.layout import LabDir
from labctl.plan.model import LabModel
from labctl.progress import Progress
from labctl.providers.base import LeftNode, Remains
from labctl.spec import calico, netem, schedule, topology
from labctl.spec.providers import traits
from labctl.spec.schema import LAB_NAME, Topology


class Lab:
    def __init__(self, dir: LabDir):
        self.dir = dir
        self._cancel: tuple = (None, None)  # (event, progress) while `up` runs

    @property
    def name(self) -> str:
        return self.dir.root.name

    # -- finding labs ------------------------------------------------------------------------

    @staticmethod
    def names() -> list[str]:
        h = layout.home()
        if not h.is_dir():
            return []
        return sorted(p.name for p in h.iterdir() if (p / "topology-data.json").exists() or (p / "state.json").exists())

    @classmethod
    def find(cls, name: str | None = None, topology_file: Path | None = None) -> Lab:
        """The lab a command means: --name, else -t's lab name, else the only lab there is."""
        if name is None and topology_file is not None:
            name = topology.load(topology_file).name
        if name is None:
            labs = cls.names()
            if len(labs) == 1:
                name = labs[0]
            elif not labs:
                raise UsageError(f"no lab under {layout.home()}", "run `labctl up` first")
            else:
                raise UsageError(f"several labs: {', '.join(labs)}", "pick one with --name")
        if not LAB_NAME.fullmatch(name):
            raise UsageError(f"{name!r} is not a lab name", "lab names match ^[a-z][a-z0-9-]{0,19}$")
        return cls(layout.lab_dir(name))

    def require(self) -> Lab:
        if not self.dir.topology_data.exists():
            raise UsageError(f"lab {self.name!r} does not exist under {layout.home()}", "run `labctl up` first")
        return self

    # -- state -------------------------------------------------------------------------------

    def model(self) -> LabModel:
        """The lab's topology-data.json, typed."""
        return LabModel.load(self.dir.topology_data)

    def data(self) -> dict:
        """The same as a dict (what the playbooks and templates read)."""
        return self.model().to_data()

    def state(self) -> dict:
        try:
            return json.loads(self.dir.state.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, **changes) -> dict:
        st = self.state() | changes | {"updated": now()}
        tmp = self.dir.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(st, indent=2) + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(self.dir.state)
        return st

    @contextlib.contextmanager
    def lock(self, progress: Progress | None = None):
        """One up/down at a time per lab. The kernel drops the flock when its holder dies, so a
        pid still written in the file means the last holder died without releasing it."""
        self.dir.claim()
        fd = os.open(self.dir.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(
                    f"lab {self.name!r} is busy: pid {holder or '?'} holds its lock",
                    "wait for it, or stop that process",
                ) from None
            if holder and progress is not None:
                progress.warn(f"taking over the lock of lab {self.name!r} left by pid {holder}, which is gone")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    # -- up / down ---------------------------------------------------------------------------

    def new_model(self, topo: Topology, prov=None) -> LabModel:
        """The lab model this topology builds to on this host: the plan plus the host's one fact,
        whether its kernel has ipip (so validate, `up --dry-run` and `up` judge the same model)."""
        prov = prov or providers.get(topo.provider, self)
        return render.build(schedule.plan(topo), self.dir, prov.ipip_supported())

    def check(self, topo: Topology) -> list[str]:
        """The provider's checks that need no host access (up's preflight runs them too); warnings."""
        prov = providers.get(topo.provider, self)
        model = self.new_model(topo, prov)
        _netem_check(prov, model)
        _tunnel_check(model)
        return prov.checks(model)

    def plan_change(self, topo: Topology, new: LabModel | None = None) -> reconcile.Diff:
        """What `up` would change; touches nothing."""
        new = new if new is not None else self.new_model(topo)
        old = self.model() if self.dir.topology_data.exists() and self.dir.state.exists() else None
        if old is not None:
            # the tunnel device was decided by the host at the last up; compare like with like
            kept = new.calico.model_copy(update={"tunnel_device": old.calico.tunnel_device})
            new = new.model_copy(update={"calico": kept})
        return reconcile.diff(old, new)

    def up(self, topo: Topology, source: Path | None, progress: Progress, **options) -> dict:
        """Build the lab, or bring a running one to the topology (see _up for the options)."""
        self.dir.refuse_unmarked()  # before `fresh` may remove it: a directory not labctl's stays as it is
        fresh = not self.dir.topology_data.exists()  # the lab dir holds at most this run's log
        try:
            return self._up(topo, source, progress, **options)
        except LockedError:
            raise
        except LabctlError:
            # refused before anything was built (preflight, render): no lab dir is left behind
            if fresh and not self.dir.state.exists() and self.dir.root.parent == layout.home():
                shutil.rmtree(self.dir.root, ignore_errors=True)
            raise

    def _up(
        self,
        topo: Topology,
        source: Path | None,
        progress: Progress,
        check: bool = False,
        tags: str | None = None,
        accept_new_host_keys: bool = False,
        extravars: dict | None = None,
    ) -> dict:
        plan = schedule.plan(topo)
        prov = providers.get(topo.provider, self)
        with self.lock(progress), _signals() as cancel:
            self._cancel = (cancel, progress)
            model = self.new_model(topo, prov)  # the one build of the lab model in `up`
            change = self.plan_change(topo, model)
            if refused := reconcile.refusal(change, topo.name):
                raise refused
            old = self.model() if change.hosts else None
            self._preflight(prov, model, change, progress)
            progress.phase("render")
            render.render(plan, self.dir, source, model=model)
            self._begin(topo, model, progress)
            try:
                self._bootstrap(prov, model, old, change, progress, accept_new_host_keys)
                result = self._provision(prov, model, change, progress, cancel, check, tags, extravars)
                if check or tags:
                    return self.save_state(phase=self.state().get("phase") if check else "partial")
                self._impair(prov, model, progress)
                labels = {n.name: n.labels for n in model.nodes}
                placement = {w.name: w.node for w in model.workloads}
                return self.save_state(
                    phase="ready", error=None, labels=labels, placement=placement, changed=result.changed
                )
            except Interrupted as e:
                # a Ctrl-C while bootstrap runs `ip` kills that child too: stopped, not failed
                self.save_state(
                    phase="interrupted",
                    error=f"interrupted during {progress.last_phase}",
                    stopped_at=progress.last_phase,
                )
                raise Interrupted(e.signum, progress.last_phase) from None
            except LabctlError as e:
                # bootstrap, host keys, faults: `list` shows the failure, not the phase it stopped in
                self.save_state(phase="failed", error=str(e), stopped_at=progress.last_phase)
                raise

    # -- the phases of `up` ------------------------------------------------------------------

    def _preflight(self, prov, model: LabModel, change: reconcile.Diff, progress: Progress) -> None:
        """Refuse what this host cannot build, before anything is written; show the plan."""
        progress.phase("preflight")
        for w in prov.preflight(model):
            progress.warn(w)
        _netem_check(prov, model)
        _tunnel_check(model)
        if _ipip_fallback(model):
            progress.warn("this kernel has no ipip: IPIP is emulated with vxlan.calico (VNI 4096, UDP 4789)")
        if change.hosts:
            progress.phase("plan")
            for line in reconcile.format(change).splitlines():
                progress.info(f"  {line}" if line else "")

    def _begin(self, topo: Topology, model: LabModel, progress: Progress) -> None:
        """The state of a lab being built (what `list` shows from here on)."""
        self.save_state(
            name=topo.name,
            provider=topo.provider,
            phase="bootstrap",
            log=str(progress.log_path),
            tunnel={
                "device": model.calico.tunnel_device,
                "encapsulation": topo.calico.encapsulation,
                "fallback": "kernel has no ipip: IPIP emulated with VXLAN" if _ipip_fallback(model) else None,
            },
            created=self.state().get("created", now()),
        )

    def _bootstrap(
        self, prov, model: LabModel, old: LabModel | None, change: reconcile.Diff, progress: Progress, accept: bool
    ) -> None:
        """Recorded faults repaired, removed nodes gone, the nodes made and answering SSH."""
        if self.state().get("faults"):
            progress.phase("repair faults")
            faults.repair_recorded(self, prov, model, progress)  # up repairs, as it does any drift
        if change.removed_nodes:
            progress.phase("remove nodes")
            prov.remove_nodes(old, change.removed_nodes, progress)
        progress.phase(f"bootstrap ({model.provider})")
        self.checkpoint()
        pids = prov.bootstrap(model, progress)
        self.save_state(phase="provision", pids={"sshd": pids})
        self.checkpoint()
        prov.accept_new_host_keys = accept
        prov.check_host_keys(model, progress)

    def _provision(self, prov, model, change, progress, cancel, check, tags, extravars) -> runner.Result:
        """The provider's up playbook, over one SSH master per node."""
        openers = sshmux.open_masters(model, self.dir)
        try:
            return runner.run_playbook(
                self.dir,
                prov.up_playbook,
                progress,
                extravars=change.extravars() | decided.extravars(self.state()) | (extravars or {}),
                check=check,
                cancel=cancel,
                tags=tags,
            )
        except Interrupted:
            raise
        except LabctlError as e:
            self.save_state(phase="failed", error=str(e), stopped_at=progress.last_phase)
            raise
        finally:
            sshmux.reap(openers)
            decided.collect(self)

    def _impair(self, prov, model: LabModel, progress: Progress) -> None:
        """The topology's impairments applied, the ones it no longer has removed."""
        if not (model.impairments or self.state().get("impairments")):
            return
        progress.phase("impairments")
        try:
            applied = impair.reconcile(self.dir, model, self.state().get("impairments") or [], prov)
        except LabctlError as e:
            self.save_state(phase="failed", error=str(e), stopped_at="impairments")
            raise
        self.save_state(impairments=applied)

    def checkpoint(self) -> None:
        """Raise Interrupted if SIGINT/SIGTERM came during `up` or `down` (which record where);
        providers call it between steps of long work."""
        cancel, _ = self._cancel
        if cancel is not None and cancel.is_set():
            raise Interrupted(getattr(cancel, "signum", signal.SIGINT))

    def down(self, progress: Progress, purge: bool = False) -> bool:
        """Remove everything the lab created; False if there was nothing to remove."""
        root = self.dir.root
        # only ever a lab's own directory: a bad name must never turn into rmtree of anything else
        if root.parent != layout.home() or not LAB_NAME.fullmatch(root.name):
            raise UsageError(f"refusing to remove {root}: not a lab directory under {layout.home()}")
        self.dir.refuse_unmarked()  # `down --name images`: never a directory labctl did not make
        if other := providers.other_home(self):
            raise HostError(
                f"lab {self.name!r} on this host is another labctl home's ({other}), not this one's "
                f"({layout.home()}): refusing to take it down",
                f"take it down from there: LABCTL_HOME={Path(other).parent} labctl down --name {self.name}",
            )
        lab: LabModel | Remains | None = None
        if self.dir.topology_data.exists():
            try:
                lab = self.model()
            except LabctlError as e:  # a corrupt data file: what the state and the host show is removed
                progress.warn(f"{e.message}: removing what the lab's state and this host show")
                lab = self._salvage()
        if lab is None:
            # the directory was removed by hand (or a down of such a lab was interrupted): what
            # the lab left on the host is still named after it
            lab = providers.orphan(self)
            if lab is None:
                if not self.dir.root.exists():
                    return False
                shutil.rmtree(self.dir.root)
                self._record_removed()
                return True
            progress.warn(
                f"lab {self.name!r} has no directory under {layout.home()}: removing what it left on the host"
            )
        self._teardown(providers.get(lab.provider, self), lab, progress, purge)
        self._record_removed()
        return True

    def _teardown(self, prov, lab: LabModel | Remains, progress: Progress, purge: bool) -> None:
        with self.lock(progress), _signals() as cancel:
            self._cancel = (cancel, progress)
            try:
                self.checkpoint()
                if prov.down_playbook and self.dir.inventory.exists():
                    progress.phase(f"reset ({lab.provider})")
                    runner.run_playbook(
                        self.dir, prov.down_playbook, progress, extravars={"labctl_purge": purge}, cancel=cancel
                    )
                progress.phase(f"teardown ({lab.provider})")
                prov.teardown(lab, progress)
                self.checkpoint()
            except Interrupted as e:
                # `list` must not go on saying `ready` for a lab half taken down
                self.save_state(provider=lab.provider, phase="down-interrupted", stopped_at=progress.last_phase)
                raise Interrupted(e.signum, progress.last_phase, "run `labctl down` again to finish") from None
            finally:
                self._cancel = (None, None)
            shutil.rmtree(self.dir.root)

    def _salvage(self) -> Remains:
        """Teardown's lab when topology-data.json cannot be read: the provider from state.json, the
        nodes from their dirs and (providers whose nodes are on this host) what the host shows."""
        provider = self.state().get("provider", "netns")
        left = providers.orphan(self) if traits(provider).nodes_on_host else None
        nodes = {n.name: n for n in (left.nodes if left else [])}
        if self.dir.root.joinpath("nodes").is_dir():
            for d in sorted(self.dir.root.joinpath("nodes").iterdir()):
                nodes.setdefault(d.name, LeftNode(d.name))
        return Remains(self.name, provider, list(nodes.values()))

    def _record_removed(self) -> None:
        """Remember the name: `down --name` of it again is a no-op, while an unknown name is an error."""
        path = layout.removed_record()
        try:
            names = path.read_text().split()
        except OSError:
            names = []
        names = [n for n in names if n != self.name][-99:] + [self.name]
        with contextlib.suppress(OSError):
            path.write_text("\n".join(names) + "\n")

    @staticmethod
    def was_removed(name: str) -> bool:
        try:
            return name in layout.removed_record().read_text().split()
        except OSError:
            return False


def _ipip_fallback(model: LabModel) -> bool:
    """The topology asked for IPIP and this host's kernel has none: vxlan.calico stands in."""
    return calico.ipip_emulated(model.calico.encapsulation, model.calico.tunnel_device)


def _netem_check(prov, model: LabModel) -> None:
    """Refuse topology impairments that need tc netem where the nodes' kernel is known to lack it."""
    need = impair.needs_netem(model)
    if need and prov.netem_supported() is False:
        raise HostError(
            f"impairments {', '.join(need)}: {netem.NO_NETEM}",
            "keep only rate in the topology's impairments, or use a kernel with sch_netem",
        )


def _tunnel_check(model: LabModel) -> None:
    """Refuse an impairment on a tunnel device the lab will not have: the host decides it (a kernel
    without ipip emulates IPIP with vxlan.calico), so this is known before anything is built."""
    tunnels = calico.TUNNELS
    for i in model.impairments or []:
        if i.interface in tunnels and i.interface != model.calico.tunnel_device:
            have = model.calico.tunnel_device or "no tunnel device"
            why = " (this kernel has no ipip: IPIP runs over vxlan.calico)" if i.interface == calico.TUNL0 else ""
            raise UsageError(
                f"impairments {i.node}:{i.interface}: this lab's nodes have {have}, not {i.interface}{why}",
                f"impair {i.node}:{have}" if model.calico.tunnel_device else "impair the node's LAN NIC",
            )


@contextlib.contextmanager
def _signals():
    """SIGINT/SIGTERM set an event the runner polls (ansible-runner's cancel_callback), so the
    playbook stops cleanly instead of leaving ansible-playbook running in its own session."""
    cancel = threading.Event()

    def handler(signum, _frame):
        cancel.signum = signum  # type: ignore[attr-defined]
        cancel.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancel
    finally:
        for s, h in old.items():
            signal.signal(s, h)
