import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "inventories" / "seed" / "topology.yml"
# The tools of the environment the tests run in (ansible-playbook, ansible-lint, yamllint) live beside its
# python: `make test` runs .venv/bin/python without .venv/bin on PATH, and a test must not skip for that.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])
# `make unit` runs the property tests (test_fuzz.py) with a fifth of their examples: `make test` runs them all
settings.register_profile("unit")
NETNS_TOOLS = ("bird", "birdc", "sshd", "ssh", "ssh-keygen", "nsenter", "unshare", "ping", "ip", "bridge")


def netns_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in NETNS_TOOLS if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    return f"missing {', '.join(missing)}" if missing else None


# what booting a qemu lab needs besides the netns tools (`make qemu-deps` installs them); the kernel tier
# boots one too, and copies the project in with scp
QEMU_TOOLS = ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mkfs.ext4", "cloud-localds", "isoinfo", "apt-cacher-ng")
KERNEL_TOOLS = (*QEMU_TOOLS, "scp")


def _tools_missing(tools) -> str | None:
    if why := netns_missing():
        return why
    missing = [t for t in tools if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    return f"missing {', '.join(missing)}" if missing else None


def qemu_missing() -> str | None:
    return _tools_missing(QEMU_TOOLS)


def kernel_missing() -> str | None:
    return _tools_missing(KERNEL_TOOLS)


# Every test is in exactly one tier (pyproject.toml describes them): `make unit` runs one, and a test in
# none would silently never run there, a test in two would run under the wrong prerequisites.
TIERS = ("unit", "lint", "netns", "qemu", "kernel")


def tier_problems(items) -> list[str]:
    out = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            out.append(f"{item.nodeid}: {'tiers ' + ' and '.join(tiers) if tiers else 'no tier'}")
    return out


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: a test without a tier is an error in every run
def pytest_collection_modifyitems(config, items):
    if problems := tier_problems(items):
        raise pytest.UsageError(
            f"every test needs exactly one tier marker ({', '.join(TIERS)}):\n  " + "\n  ".join(problems)
        )
    prerequisites(items)
    schedule(items)


def tier(item) -> str:
    return next(m.name for m in item.iter_markers() if m.name in TIERS)


def prerequisites(items) -> None:
    """A test whose tier's tools are missing: skipped on a developer's machine, a strict xfail on CI."""
    # a kernel or qemu test needs everything a netns test needs, and more
    whys = {"kernel": kernel_missing, "qemu": qemu_missing, "netns": netns_missing}
    found: dict[str, str | None] = {}
    for item in items:
        t = tier(item)
        if t not in whys:
            continue
        if t not in found:
            found[t] = whys[t]()
        if (why := found[t]) is None:
            continue
        if os.environ.get("CI"):
            # CI installs everything: a skipped real-network or real-VM test there would hide a broken setup
            item.add_marker(pytest.mark.xfail(reason=f"{t} prerequisites: {why}", strict=True, run=False))
        else:
            item.add_marker(pytest.mark.skip(reason=f"{t} test: {why}"))


# `make test` runs two pytest-xdist workers with `--dist loadfile`, and the scheduler below: the files that boot VMs
# (qemu, kernel tiers) are one unit, first: one worker runs them in order, one VM lab at a time (TCG on two cores),
# while the other worker runs every other file, a file at a time (a module-scoped lab is built once). The netns
# tests wait on BIRD, sshd and ansible more than they compute: they overlap with the VMs' CPU work.
# (xdist's own `--dist loadgroup` marks nothing under pytest 9.2: it renames items through `_nodeid`, gone there.)
VM_TIERS = ("qemu", "kernel")
VM_FILES = ("tests/test_kernel.py", "tests/test_qemu.py", "tests/test_qemu_network.py", "tests/test_qemu_racks.py")


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def unit_of(nodeid: str) -> str:
    return "vm" if file_of(nodeid) in VM_FILES else file_of(nodeid)


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class VMFilesFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False  # the collection's order: schedule() put the VM files first
    return VMFilesFirst(config, log)


def schedule(items) -> None:
    """The VM files first; a file of the suite with a qemu or kernel test that VM_FILES does not name is an
    error (its VMs would boot beside the others')."""
    found = {file_of(item.nodeid) for item in items if tier(item) in VM_TIERS}
    found = {f for f in found if f.startswith("tests/")}  # this suite's files (not test_markers.py's samples)
    if stray := sorted(found - set(VM_FILES)):
        raise pytest.UsageError(f"add {', '.join(stray)} to VM_FILES in tests/conftest.py: it boots VMs")
    items.sort(key=lambda item: unit_of(item.nodeid) != "vm")  # stable: file order otherwise kept


@pytest.fixture
def labhome(monkeypatch):
    # short: BIRD's control socket and ssh's ControlPath live under it (107-byte limit)
    d = tempfile.mkdtemp(prefix="lc", dir="/tmp")
    monkeypatch.setenv("LABCTL_HOME", d)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def labctl(*args, home: Path | None = None, check: bool = False, timeout: float = 300, input: str | None = None):
    env = dict(os.environ)
    if home is not None:
        env["LABCTL_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    p = subprocess.run(
        [sys.executable, "-m", "labctl", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        input=input,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"labctl {' '.join(map(str, args))} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def _qemu_owned(name: str) -> bool:
    # a qemu lab's namespaces ("lq-"), taps and veths ("lq"), bridges ("br-lq"): the VM tests' labs, which
    # `make test` runs alongside (schedule()); each of those checks its own lab's leftovers (qemu_residue)
    return name.startswith(("lq", "br-lq"))


def _route_dev(route: str) -> str:
    """The device of an `ip route` line ("" for one without, e.g. a blackhole)."""
    return route.split(" dev ", 1)[1].split()[0] if " dev " in route else ""


def host_snapshot(home: Path) -> dict:
    """What a netns lab under `home` could leave behind on the host."""
    ns = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    ns = {x for x in ns if not x.startswith("(") and not _qemu_owned(x)}
    links = set()
    for line in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines():
        if not _qemu_owned(name := line.split(":")[1].strip().split("@")[0]):
            links.add(name)
    procs = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(home) in cmd:  # every lab process (sshd, bird, ssh masters) names a path in the lab dir
                procs.add((int(pid), cmd.strip()))
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    routes = {r for r in routes.splitlines() if not _qemu_owned(_route_dev(r))}
    return {"netns": ns, "links": links, "procs": procs, "routes": routes}


def residue(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before if after[k] - before[k]}


def lab_model(nodes: list[dict], **lab):
    """A small LabModel for unit tests: each node is the fields a test cares about over a worker's
    required ones; `lab` overrides top-level fields (calico is merged)."""
    from labctl.plan.model import LabModel

    node = {"role": "worker", "address": "10.0.0.1", "interface": "eth0", "block": "192.168.0.0/24"}
    calico = {"version": "v3.30.7", "encapsulation": "VXLAN", "pool": "192.168.0.0/16", "block_size": 24}
    calico |= {"asn": 64512, "nat_outgoing": True} | lab.pop("calico", {})
    data = {
        "name": "x",
        "provider": "netns",
        "network": {"lan": "10.0.0.0/24", "gateway": "10.0.0.254"},
        "kubernetes": {"version": "1.34", "pod_subnet": "192.168.0.0/16", "service_subnet": "10.96.0.0/12"},
        "calico": calico,
        "nodes": [node | n for n in nodes],
    }
    return LabModel.model_validate(data | lab)


def renumbered(name: str, octet: int, src: Path = SEED) -> dict:
    """A topology (the seed's by default) as a dict, under another lab name and LAN 10.<octet>.0.0/16 with
    its nodes at 10.<octet>.22.1.., so a test's lab never meets another's names or addresses."""
    d = yaml.safe_load(src.read_text())
    d["name"] = name
    d["network"] = {"lan": f"10.{octet}.0.0/16"}
    for i, node in enumerate(d["nodes"].values()):
        node["address"] = f"10.{octet}.22.{i + 1}"
    return d


def write_yaml(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


# -- real labs shared by a module's tests, and labs a test builds itself ---------------------------


@dataclass
class RealLab:
    home: Path
    topology: Path
    up: subprocess.CompletedProcess
    before: dict  # host_snapshot before the lab was built
    down: subprocess.CompletedProcess | None = None  # the final `down`, once the lab is gone


@contextlib.contextmanager
def real_lab(topology: Path, require_up: bool = True):
    """One real lab for a module's tests (a module-scoped fixture wraps it): a fresh short home (BIRD's
    and ssh's sockets live under it), `up`; afterwards `down`, and nothing of the lab is left on the host."""
    home = Path(tempfile.mkdtemp(prefix="lc", dir="/tmp"))
    before = host_snapshot(home)
    lab = None
    try:
        up = labctl("up", "-t", topology, home=home)
        if require_up:
            assert up.returncode == 0, up.stdout + up.stderr
        lab = RealLab(home, topology, up, before)
        yield lab
    finally:
        down = labctl("down", "-t", topology, home=home)
        if lab is not None:
            lab.down = down
        try:
            assert residue(before, host_snapshot(home)) == {}
        finally:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def downs(labhome):
    """(home, host_snapshot before, list): every topology a test appends to the list is taken down at
    the end, by its topology's names, then by its lab's name if its directory is still there."""
    before = host_snapshot(labhome)
    made: list[Path] = []
    yield labhome, before, made
    for t in made:
        labctl("down", "-t", t, home=labhome)
        name = yaml.safe_load(t.read_text())["name"]
        if (labhome / name).exists():
            labctl("down", "--name", name, home=labhome)


# --- qemu labs (test_qemu.py, test_qemu_racks.py) ----------------------------------------------------
QEMU_IMAGES = Path(os.environ.get("LABCTL_TEST_IMAGES", "/var/tmp/labctl-test-images"))


@pytest.fixture
def qhome(labhome, monkeypatch):
    """A throwaway home whose image cache is shared across runs: a cold image build costs a minute, once."""
    QEMU_IMAGES.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("LABCTL_IMAGES", str(QEMU_IMAGES))
    return labhome


def qemu_residue(home: Path, name: str) -> list[str]:
    """What a qemu lab under `home` could leave: QEMU or proxy processes of this home, the lab's links
    (taps, routers' veths, bridges), its router namespaces, its lab dir."""
    from labctl.providers.qemu import machine

    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(home) in cmd:
            left.append(f"process {pid}: {cmd[:100]}")
    left += [f"link {x}" for x in machine.lab_links(name)]
    spaces = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    left += [f"netns {x}" for x in spaces if x.startswith(f"lq-{name}.")]
    if (home / name).exists():
        left.append(f"lab dir {home / name}")
    return left


# --- a real browser (test_view.py, bench/view.py) -------------------------------------------------------
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# without these, chromium's own background connections (updates, sync, QUIC probes) try to leave the host
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium(window: str = "1400,900"):
    """Debian's chromium, headless, driven by selenium through Debian's chromedriver (no driver download),
    with a fresh profile removed afterwards. `make test` installs both: a missing one fails, it never skips."""
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "apt-get install chromium chromium-driver (make test does)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lcchromium")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window}"]:
        opts.add_argument(flag)
    try:
        d = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
        try:
            yield d
        finally:
            d.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
