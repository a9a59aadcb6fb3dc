"""Base images for the qemu provider, built from the distro mirror with mmdebstrap.

A recipe (suite, packages, the customize script) is hashed; the image lives under
$LABCTL_HOME/images/<name>-<hash>/ as base.raw (ext4, no partition table) with the kernel and
initrd next to it, so QEMU boots it directly (-kernel/-initrd) with no bootloader. Rebuilding an
unchanged recipe finds the directory and returns at once. A build happens in a temporary
directory renamed into place at the end: an interrupted build leaves no half image behind.

Per-node settings are not baked in: each VM gets a small ext4 "config disk" (/dev/vdb, made with
mkfs.ext4 -d, no mounting on the host) that the labctl-config unit below copies into place on
every boot, before the network and sshd start: hostname, static address, the lab's SSH key for
the `labctl` sudo user and the host key labctl generated (and pinned) for this node."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from labctl.errors import HostError, LabctlError, UsageError
from labctl.host import preflight
from labctl.plan import layout
from labctl.spec.providers import traits

USER = traits("qemu").lab_user  # the login labctl makes in its images (the registry says it)

PACKAGES = [
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    "openssh-server",
    "python3",
    "python3-apt",  # ansible's apt module
    "sudo",
    "ca-certificates",
    "gnupg",
    "curl",
    "apt-transport-https",
    "procps",
    "iptables",
    "conntrack",
    "ethtool",
    "socat",
    "less",
]

# run by mmdebstrap as a customize hook, with the new root as $1
CUSTOMIZE = r"""set -eu
r="$1"
chroot "$r" useradd --create-home --shell /bin/bash --user-group USER
printf 'USER ALL=(ALL) NOPASSWD:ALL\n' > "$r/etc/sudoers.d/labctl"
chmod 0440 "$r/etc/sudoers.d/labctl"
printf '/dev/vda / ext4 defaults,noatime 0 1\n' > "$r/etc/fstab"
printf 'labctl\n' > "$r/etc/hostname"
# until the config disk names the lab's resolver (dns.py): names come from /etc/hosts
printf '# labctl: set from the config disk at boot\noptions timeout:1 attempts:1\n' > "$r/etc/resolv.conf"
# the node's host key comes from labctl (pinned before first contact): no generated ones
rm -f "$r"/etc/ssh/ssh_host_*
cat > "$r/etc/ssh/sshd_config.d/labctl.conf" <<'X'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
X
cat > "$r/usr/local/sbin/labctl-config" <<'X'
#!/bin/sh
# labctl: apply this node's settings from the config disk (/dev/vdb) made by `labctl up`
set -eu
m=/run/labctl-config
mkdir -p "$m"
mount -o ro /dev/vdb "$m"
trap 'umount "$m"' EXIT
install -m 0644 "$m/hostname" /etc/hostname
hostname -F /etc/hostname
install -m 0644 "$m/hosts" /etc/hosts
# the lab's resolver on the host (CoreDNS forwards to it); a config disk of an older labctl has none
if [ -f "$m/resolv.conf" ]; then install -m 0644 "$m/resolv.conf" /etc/resolv.conf; fi
install -m 0644 "$m/lab.network" /etc/systemd/network/10-lab.network
# the LAN NIC under the topology's name (defaults.interface, e.g. ens192), before networkd sees it
read -r mac name < "$m/ifname"
for d in /sys/class/net/*; do
  if [ "$(cat "$d/address")" = "$mac" ] && [ "${d##*/}" != "$name" ]; then
    ip link set dev "${d##*/}" down
    ip link set dev "${d##*/}" name "$name"
  fi
done
install -d -m 0700 -o labctl -g labctl /home/labctl/.ssh
install -m 0600 -o labctl -g labctl "$m/authorized_keys" /home/labctl/.ssh/authorized_keys
install -m 0600 "$m/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 "$m/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
X
chmod 0755 "$r/usr/local/sbin/labctl-config"
cat > "$r/etc/systemd/system/labctl-config.service" <<'X'
[Unit]
Description=labctl node settings from the config disk
DefaultDependencies=no
Wants=dev-vdb.device sys-subsystem-net-devices-eth0.device
After=dev-vdb.device sys-subsystem-net-devices-eth0.device systemd-remount-fs.service
Before=systemd-networkd.service ssh.service sysinit.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/labctl-config
[Install]
WantedBy=sysinit.target
X
chroot "$r" systemctl enable labctl-config.service systemd-networkd.service
# nothing may hold the apt lock behind ansible's back, and nothing waits for a network it never gets
chroot "$r" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
  systemd-networkd-wait-online.service e2scrub_reap.service getty-static.service
""".replace("USER", USER)

# debian-12's VMs only (a customize hook after CUSTOMIZE; the netns image's recipe stays as it was). Measured
# under TCG (docs/vm-speed.md): a first run's containerd phase is CPU on the VM, not the download through
# the proxy (~2 s of ~8 min): each VM building apt's package cache from the 50 MB index on its first apt
# call (~35 s each; mmdebstrap's cleanup removes the cache, so it is made here and kept), fetching and
# unpacking the 6 MB Translation index nobody reads, dpkg's fsync after every file on a disposable overlay.
APT_TUNING = r"""set -eu
printf 'Acquire::Languages "none";\n' > "$1/etc/apt/apt.conf.d/90labctl-no-translations"
printf 'force-unsafe-io\n' > "$1/etc/dpkg/dpkg.cfg.d/90labctl-unsafe-io"
rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin
chroot "$1" apt-cache gencaches
"""


# everything that decides an image's content, hashed into its cache key
RECIPES = {
    "debian-12": {
        "suite": "bookworm",
        "variant": "minbase",
        "packages": PACKAGES,
        "customize": CUSTOMIZE,
        # keep the package lists: apt on a fresh VM works at once (the roles' cache_valid_time)
        "skip": ["cleanup/apt/lists"],
        "tuning": APT_TUNING,
        "cmdline": "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1",
        "size": "8G",  # sparse: the base holds ~0.6 GB; the rest is room for containerd's images
    },
}
# debian-12 plus what the netns provider needs (the Makefile's APT_PACKAGES): netns labs inside a VM get
# the guest's kernel, which has ipip and sch_netem (the article's tunl0, netem) where the host's may not.
# The bird2 package's own daemon is disabled: each node namespace runs its own BIRD.
NETNS_PACKAGES = ["bird2", "tcpdump", "iputils-ping", "openssh-client", "util-linux", "python3-venv", "openssl"]
RECIPES["debian-12-netns"] = {k: v for k, v in RECIPES["debian-12"].items() if k != "tuning"} | {
    "packages": PACKAGES + NETNS_PACKAGES,
    "customize": CUSTOMIZE + 'chroot "$r" systemctl disable bird.service\n',
}


def images_dir() -> Path:
    # LABCTL_IMAGES: one image cache for many homes (the tests' throwaway homes share one)
    if env := os.environ.get("LABCTL_IMAGES"):
        return Path(env).expanduser().resolve()
    return layout.home() / "images"


def recipe_hash(name: str) -> str:
    r = RECIPES[name]
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:12]


def image_dir(name: str) -> Path:
    return images_dir() / f"{name}-{recipe_hash(name)}"


def _mirror() -> str | None:
    """The host's own Debian mirror (the only one reachable on some machines); None: mmdebstrap's."""
    for f in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and words[1].rstrip("/").endswith("/debian"):
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and words[-3 if len(words) > 3 else 1].endswith("/debian"):
                url = [w for w in words[1:] if "://" in w]
                if url:
                    return url[0]
    return None


def get(name: str) -> Path | None:
    d = image_dir(name)
    return d if (d / "image.json").exists() else None


def build(name: str, progress=None, force: bool = False) -> tuple[Path, bool]:
    """The image dir of `name`, built if missing; (dir, built now)."""
    if name not in RECIPES:
        raise UsageError(f"unknown image {name!r}", f"images labctl builds: {', '.join(RECIPES)}")
    done = get(name)
    if done is not None and not force:
        return done, False
    preflight.need_tools(("mmdebstrap", "mkfs.ext4"), "apt-get install -y mmdebstrap e2fsprogs")
    preflight.need_root("building an image", "mmdebstrap chroot mode")
    r = RECIPES[name]
    final = image_dir(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".build-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.monotonic()
    try:
        if progress is not None:
            progress.info(f"  building image {name} (mmdebstrap {r['suite']}, about a minute)")
        kernel = _root(name, tmp)
        _disk(name, tmp, kernel, t0)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final, True


def _root(name: str, tmp: Path) -> Path:
    """The recipe's system in tmp/root (mmdebstrap), its kernel and initrd copied next to it; the kernel."""
    r = RECIPES[name]
    hook = tmp / "customize.sh"
    hook.write_text(r["customize"])
    root = tmp / "root"
    argv = [
        "mmdebstrap",
        "--quiet",
        "--mode=root",
        *(f"--skip={x}" for x in r["skip"]),
        f"--variant={r['variant']}",
        "--include=" + ",".join(r["packages"]),
        f'--customize-hook=sh {hook} "$1"',
        *(["--skip=cleanup/apt/cache", f"--customize-hook={r['tuning']}"] if "tuning" in r else []),
        r["suite"],
        str(root),
    ]
    if mirror := _mirror():
        argv.append(mirror)
    _run(argv, tmp / "build.log", 1800)
    boot = root / "boot"
    kernel = max(boot.glob("vmlinuz-*"), default=None)
    initrd = max(boot.glob("initrd.img-*"), default=None)
    if kernel is None or initrd is None:
        raise HostError(f"the {name} image has no kernel or initrd", f"see {tmp / 'build.log'}")
    shutil.copyfile(kernel, tmp / "vmlinuz")
    shutil.copyfile(initrd, tmp / "initrd.img")
    return kernel


def _disk(name: str, tmp: Path, kernel: Path, t0: float) -> None:
    """tmp/root as the ext4 base.raw (the root then goes), and image.json saying what it is."""
    r = RECIPES[name]
    root, raw = tmp / "root", tmp / "base.raw"
    with open(raw, "wb") as f:
        f.truncate(_bytes(r["size"]))
    _run(["mkfs.ext4", "-q", "-F", "-L", "labctl-root", "-d", str(root), str(raw)], tmp / "build.log", 600)
    shutil.rmtree(root)
    meta = {
        "name": name,
        "recipe": recipe_hash(name),
        "kernel": kernel.name,
        "cmdline": r["cmdline"],
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - t0, 1),
    }
    (tmp / "image.json").write_text(json.dumps(meta, indent=2) + "\n")


def _bytes(size: str) -> int:
    return int(size[:-1]) * {"M": 1 << 20, "G": 1 << 30}[size[-1]]


def _run(argv: list[str], log: Path, timeout: float) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise HostError(f"{argv[0]} did not finish in {timeout:.0f} s") from None
    if p.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise HostError(f"{argv[0]} failed (exit {p.returncode}): {' | '.join(tail)}")


def listing() -> list[dict]:
    out = []
    d = images_dir()
    if not d.is_dir():
        return out
    for p in sorted(d.iterdir()):
        meta = p / "image.json"
        if not meta.exists():
            continue
        info = json.loads(meta.read_text())
        size = sum(f.stat().st_blocks * 512 for f in p.iterdir() if f.is_file())
        name = info.get("name", p.name)
        current = name in RECIPES and p.name == image_dir(name).name
        out.append(
            {
                "name": name,
                "dir": str(p),
                "recipe": info.get("recipe"),
                "current": current,
                "disk_mb": size >> 20,
                "built": info.get("built"),
            }
        )
    return out


def remove(name: str | None, force: bool = False) -> list[str]:
    """Remove the images of `name` (every recipe version), or every image; returns the dirs. Only a
    directory with an image.json (what a build leaves) is an image: anything else in the images
    directory (LABCTL_IMAGES may be a shared folder) is not labctl's to remove. An image a lab's disks
    are based on is refused unless `force`."""
    d = images_dir()
    images = [p for p in sorted(d.iterdir()) if (p / "image.json").is_file()] if d.is_dir() else []
    if name is not None:
        images = [p for p in images if p.name == name or p.name.rsplit("-", 1)[0] == name]
        if not images:
            have = sorted({p.name.rsplit("-", 1)[0] for p in (x for x in d.iterdir() if (x / "image.json").is_file())})
            raise UsageError(
                f"no image {name!r} in {d}", f"images there: {', '.join(have)}" if have else "there are none"
            )
    used = users(images)
    if used and not force:
        p, labs = next(iter(used.items()))
        raise LabctlError(
            f"image {p} is in use by {', '.join(labs)}: its disks are based on it",
            "take that lab down first, or `labctl image rm --force` (its VMs then cannot boot again)",
        )
    for p in images:
        shutil.rmtree(p)
    return [str(p) for p in images]


def users(images: list[Path]) -> dict[Path, list[str]]:
    """Which labs use these image dirs: a running QEMU of any home (its kernel is booted from the
    image, or its qcow2 disk names the image as its backing file) and this home's qemu labs (their
    state, their nodes' disks)."""
    disks: dict[Path, str] = {}  # disk -> who
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for a in argv:
            for part in a.split(","):
                if part.startswith("file=") and part.endswith(".qcow2"):
                    disk = Path(part[5:])
                    lab = disk.parents[2] if len(disk.parents) > 2 else disk.parent  # <lab>/nodes/<node>/disk.qcow2
                    disks[disk] = f"the lab in {lab} (QEMU pid {pid})"
                elif any(part.startswith(f"{p}/") for p in images):
                    disks[Path(part)] = f"QEMU pid {pid}"
    home = layout.home()
    for lab in sorted(home.iterdir()) if home.is_dir() else ():
        for disk in sorted(lab.glob("nodes/*/disk.qcow2")):
            disks.setdefault(disk, f"lab {lab.name}")
        try:
            state = json.loads((lab / "state.json").read_text())
            disks.setdefault(Path(state["qemu"]["image"]) / "base.raw", f"lab {lab.name}")
        except (OSError, ValueError, KeyError, TypeError):
            pass
    out: dict[Path, list[str]] = {}
    for disk, who in disks.items():
        base = disk if disk.suffix != ".qcow2" else backing_file(disk)
        for p in images:
            if base is not None and (base == p or p in base.parents) and who not in out.get(p, []):
                out.setdefault(p, []).append(who)
    return out


def backing_file(disk: Path) -> Path | None:
    """The backing file a qcow2 overlay names (its header: magic, version, offset and size of the name)."""
    try:
        with open(disk, "rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:4] != b"QFI\xfb":
                return None
            offset, size = int.from_bytes(head[8:16], "big"), int.from_bytes(head[16:20], "big")
            if not offset or not 0 < size < 4096:
                return None
            f.seek(offset)
            name = f.read(size).decode(errors="replace")
    except OSError:
        return None
    return (disk.parent / name).resolve()
