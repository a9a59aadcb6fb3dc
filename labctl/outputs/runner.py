"""The only module that imports ansible_runner. Runs a playbook against a lab and turns its
events into progress lines; a failure comes back as one ProvisionError naming host, task,
message and log file."""

from __future__ import annotations

import os
import re
import shlex
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from labctl.errors import Interrupted, ProvisionError
from labctl.plan import layout
from labctl.plan.layout import LabDir
from labctl.progress import Progress


@dataclass
class Failure:
    host: str
    task: str
    message: str
    unreachable: bool = False


@dataclass
class Result:
    status: str
    rc: int
    changed: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


class _Events:
    """ansible-runner event -> progress line."""

    def __init__(self, progress: Progress, known_hosts: str = "known_hosts"):
        self.p = progress
        self.known_hosts = known_hosts
        self.failures: list[Failure] = []
        self.changed: dict[str, int] = {}
        self.output: list[str] = []
        self.pending_phase: str | None = None  # shown once a task of the play starts

    def _flush_phase(self) -> None:
        if self.pending_phase is not None:
            self.p.phase(self.pending_phase)
            self.pending_phase = None

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        if kind == "playbook_on_play_start":
            # a play whose tasks all fall to --tags, or with no hosts left to change, prints nothing
            self.pending_phase = data.get("play", "").strip() or "play"
        elif kind == "playbook_on_task_start" and not data.get("is_conditional"):
            self._flush_phase()
            self.p.task(f"TASK {data.get('task', '').strip()}")
        elif kind == "playbook_on_handler_task_start":
            self._flush_phase()
            self.p.task(f"HANDLER {data.get('task', '').strip()}")
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            host = data.get("host", "?")
            res = data.get("res") or {}
            status = {
                "runner_on_failed": "failed",
                "runner_on_unreachable": "unreachable",
                "runner_on_skipped": "skipped",
            }.get(kind, "changed" if res.get("changed") else "ok")
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                status = "ok"
            detail = ""
            if status in ("failed", "unreachable"):
                detail = _message(res, self.known_hosts)
                self.failures.append(Failure(host, data.get("task", "?").strip(), detail, status == "unreachable"))
            if status == "changed":
                self.changed[host] = self.changed.get(host, 0) + 1
            self.p.host(host, status, data.get("duration"), detail)
        stdout = event.get("stdout")
        if stdout:
            self.p.log(stdout)
            if kind in ("verbose", "error", "warning"):
                self.output += stdout.splitlines()
        return True


HOST_KEY_UNKNOWN = "host key is not in the lab's known_hosts: check it, then run `labctl up --accept-new-host-keys`"
HOST_KEY_CHANGED = "host key CHANGED since it was pinned (reinstalled machine, or an attack): remove its line from {}"


# what ssh -tt (ansible's raw) prints on stderr as a session ends: never the reason of a failure
_SSH_NOISE = re.compile(r"Shared connection to \S+ closed\.")


def _message(res: dict, known_hosts: str = "known_hosts") -> str:
    if res.get("censored"):
        return res["censored"]
    text = " ".join(str(res.get(k, "")) for k in ("msg", "stderr", "stdout", "module_stderr"))
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return HOST_KEY_CHANGED.format(known_hosts)
    if "Host key verification failed" in text or "No ED25519 host key is known" in text:
        return HOST_KEY_UNKNOWN
    keys = ("msg", "stderr", "module_stderr", "stdout")
    # get_url/uri: "Request failed: <urlopen error ...>" says nothing of where it went
    where = f" ({res['url']})" if isinstance(res.get("url"), str) and res["url"] not in text else ""
    if res.get("rc") not in (None, 0):
        # a command's own words say more than ansible's "non-zero return code"
        keys = ("stderr", "stdout", "module_stderr", "msg")
    for key in keys:
        val = res.get(key)
        if val:
            lines = [x for x in str(val).strip().splitlines() if x.strip() and not _SSH_NOISE.fullmatch(x.strip())]
            if lines:
                return lines[-1][:400] + where
    return "failed" + where


def _no_close_delay() -> None:
    """ansible-runner closes ansible-playbook's pty after its loop saw the process end, and ptyprocess
    then sleeps 0.1 s "to give the kernel time to update process status" before checking it: every
    `up` paid that for a process already reaped. Skipped only then; a live child gets the sleep."""
    import ptyprocess  # noqa: PLC0415 (heavy: imported where it is used)

    close = ptyprocess.PtyProcess.close
    if getattr(close, "labctl", False):
        return

    def close_reaped(self, force=True):
        if self.terminated:
            self.delayafterclose = 0
        return close(self, force)

    close_reaped.labctl = True
    ptyprocess.PtyProcess.close = close_reaped


def run_playbook(
    lab: LabDir,
    playbook: str,
    progress: Progress,
    extravars: dict | None = None,
    check: bool = False,
    limit: str | None = None,
    cancel: threading.Event | None = None,
    tags: str | None = None,
) -> Result:
    import ansible_runner  # noqa: PLC0415 - heavy: imported only when a playbook runs

    _no_close_delay()
    playbooks = layout.shipped("playbooks")
    env = {
        "ANSIBLE_CONFIG": str(lab.ansible_cfg),
        "ANSIBLE_ROLES_PATH": str(playbooks / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        # ansible-runner starts ansible-playbook through PATH: make it the one beside this python
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
        "ANSIBLE_LOCAL_TEMP": str(lab.runner / "tmp"),
        "HOME": os.environ.get("HOME", "/root"),
    }
    lab.runner.mkdir(parents=True, exist_ok=True, mode=0o700)
    lab.control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    events = _Events(progress, str(lab.known_hosts))
    args = (["--check", "--diff"] if check else []) + (["--tags", tags] if tags else [])
    cmdline = " ".join(shlex.quote(a) for a in args) or None
    r = ansible_runner.run(
        private_data_dir=str(lab.runner),
        playbook=str(playbooks / playbook),
        inventory=str(lab.inventory),
        extravars=extravars or {},
        envvars=env,
        cmdline=cmdline,
        limit=limit,
        quiet=True,
        event_handler=events,
        cancel_callback=(lambda: cancel.is_set()) if cancel is not None else None,
        rotate_artifacts=5,
        suppress_env_files=True,
    )
    # a task with ignore_unreachable (vm-down.yml's first contact) counts its host as ignored, not dark:
    # that is not why the run failed
    dark = (getattr(r, "stats", None) or {}).get("dark") or {}
    events.failures = [f for f in events.failures if not f.unreachable or f.host in dark]
    result = Result(r.status, r.rc, events.changed, events.failures)
    if r.status == "canceled":
        raise Interrupted(getattr(cancel, "signum", 2))
    if r.status != "successful":
        # `down` writes no log file: then the output above is all there is
        hint = f"log file saved to {progress.log_path}" if progress.log_path else None
        if events.failures:
            f = events.failures[0]
            raise ProvisionError(f"{f.host}: task '{f.task}' failed: {f.message}", hint)
        errors = [x for x in events.output if "ERROR" in x]
        why = errors[0].split("]:", 1)[-1].strip() if errors else f"ended {r.status} (rc {r.rc})"
        raise ProvisionError(f"ansible-playbook {playbook}: {why}", hint)
    return result
