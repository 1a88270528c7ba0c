"""Guest images for the VM lab: a Debian bookworm system on a LUKS2 root, built offline
from apt's configured sources and cached by a hash of its recipe.

How an image is made (only the first run with a given recipe builds; see ``image()``):

1. On the host, ``mmdebstrap`` makes the root file system in a directory (apt's own
   sources, .debs kept in ``<cache>/debs`` for the next recipe), and the common set-up
   writes into it: fstab and crypttab for ``/dev/mapper/root``, systemd-networkd, the
   system's OpenSSH (its own ed25519 host key only), the bot's key authorised for root,
   and the initrd's private host key at ``/boot/ssh_host_ed25519_key`` in OpenSSH format
   (the path the bot's ``initrd_host_key_file`` reads). Then the flavour's ``prepare``.
2. The directory becomes an ext4 image (``mkfs.ext4 -d``, no mount needed) and a builder
   guest boots from it: its own kernel's dm-crypt (this host's kernel has no device
   mapper) and the real ``cryptsetup`` format the target disk as LUKS2, copy the system
   onto it, and run the flavour's ``initramfs_command`` chrooted in the copy with the
   volume open, so the initramfs is made against the real encrypted root.
3. The kernel and initramfs are read back out of the seed image (``debugfs``): the lab
   boots them directly (qemu ``-kernel``/``-initrd``), so a guest's reboot runs the same
   kernel and initramfs again — a real reboot through the initramfs.

Flavours: what differs between NixOS's scripted and systemd initrds is pluggable. A
flavour is any object with these attributes (``Flavour`` below):

- ``name``: part of the image's name ("scripted", "systemd");
- ``unlock``: the inventory's ``unlock`` value for its guests ("askpass", "systemd");
- ``packages``: Debian packages added to the root file system (its initramfs generator,
  its initrd SSH server …);
- ``recipe()``: text that changes whenever the image would (its files, its commands):
  hashed into the cache key;
- ``prepare(root)``: runs on the host after the common set-up, before the builder guest:
  writes files under ``root.path`` and runs commands chrooted with ``root.chroot([...])``.
  It keys the initrd SSH server: the private host key is ``root.initrd_key`` (the file at
  ``/boot/ssh_host_ed25519_key``, OpenSSH format; convert it if the server needs another
  format), ``root.bot_public`` is the one key to authorise for root, and the server
  listens on ``INITRD_PORT``;
- ``initramfs_command``: a shell command run chrooted in the final root inside the
  builder guest (LUKS volume open as ``/dev/mapper/root`` and mounted, /dev /proc /sys
  bound): it must leave the initramfs at ``/boot/initrd.img-<kernel version>``;
- ``cmdline(luks_uuid)``: the kernel arguments its initramfs needs on top of ``COMMON_CMDLINE``
  (network, which volume to open).

The keys (the initrd's, the system's, the bot's) are made once per image and kept next
to it, so tests pin them and they stay the same across reboots.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tests.vm import kvm, qemu

CACHE_ENV = "DEPLOYBOT_VM_CACHE"
DEFAULT_CACHE = Path("/var/cache/deploybot-vm")
#: The lab's fixed disk passphrase: a test constant, known to every test.
PASSPHRASE = "vm lab disk passphrase"
LUKS_UUID = "6b1f5e2c-8d4a-4c3e-9a57-2f0d1c9e7a11"
INITRD_PORT = 2222
GUEST_ADDRESS = "10.0.2.15"
GATEWAY = "10.0.2.2"
INITRD_KEY = "/boot/ssh_host_ed25519_key"
SUITE = "bookworm"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DISK_SIZE = "4G"
#: Packages every guest has; a flavour adds its own.
BASE_PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "cryptsetup",
    "iproute2",
    "e2fsprogs",
    "procps",
    "kmod",
    "busybox",
    "nix-bin",
    "python3-minimal",
)
COMMON_CMDLINE = (
    "console=ttyS0 root=/dev/mapper/root ro net.ifnames=0 panic=-1 quiet systemd.show_status=0"
)
BUILD_OK = "DEPLOYBOT-VM-BUILD-OK"
BUILDER_CMDLINE = (
    "console=ttyS0 root=/dev/vdb rw init=/usr/local/sbin/deploybot-build panic=-1 ip=off"
)
#: Bump when the build changes in a way the hashed parts (``recipe_hash``) do not show.
RECIPE_VERSION = "1"


class Root(Protocol):
    """The root file system being built, as a flavour's ``prepare`` sees it."""

    path: Path
    initrd_key: Path
    bot_public: str

    def chroot(self, argv: list[str]) -> None: ...

    def write(self, relative: str, text: str, mode: int = 0o644) -> Path: ...


class Flavour(Protocol):
    """An initrd flavour: see the module's docstring for what each part must do."""

    @property
    def name(self) -> str: ...

    @property
    def unlock(self) -> str: ...

    @property
    def packages(self) -> tuple[str, ...]: ...

    @property
    def initramfs_command(self) -> str: ...

    def recipe(self) -> str: ...

    def prepare(self, root: Root) -> None: ...

    def cmdline(self, luks_uuid: str) -> str: ...


@dataclass(frozen=True)
class Keys:
    """The keys of one image, kept next to it: private halves and their ``.pub``."""

    dir: Path

    def private(self, name: str) -> Path:
        return self.dir / name

    def public(self, name: str) -> str:
        return (self.dir / f"{name}.pub").read_text().strip()

    @property
    def bot(self) -> Path:
        return self.private("bot")

    @property
    def system_public(self) -> str:
        return self.public("system")

    @property
    def initrd_public(self) -> str:
        return self.public("initrd")


@dataclass(frozen=True)
class Image:
    """A built guest: its base disk (never written by tests), kernel, initramfs, keys."""

    dir: Path
    flavour: str
    unlock: str
    cmdline: str

    @property
    def disk(self) -> Path:
        return self.dir / "disk.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def keys(self) -> Keys:
        return Keys(self.dir / "keys")


@dataclass
class _Root:
    path: Path
    initrd_key: Path
    bot_public: str

    def chroot(self, argv: list[str]) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["chroot", str(self.path), *argv], check=True, env=env)

    def write(self, relative: str, text: str, mode: int = 0o644) -> Path:
        target = self.path / relative.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
        return target


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def recipe_hash(flavour: Flavour) -> str:
    text = json.dumps(
        {
            "version": RECIPE_VERSION,
            "common": inspect.getsource(_common) + inspect.getsource(_build),
            "constants": [
                PASSPHRASE,
                LUKS_UUID,
                INITRD_PORT,
                GUEST_ADDRESS,
                DISK_SIZE,
                BUILDER_CMDLINE,
                INITRD_KEY,
            ],
            "build": (Path(__file__).parent / "build-guest.sh").read_text(),
            "packages": sorted({*BASE_PACKAGES, *flavour.packages}),
            "flavour": flavour.name,
            "recipe": flavour.recipe(),
            "initramfs": flavour.initramfs_command,
            "sources": SOURCES.read_text() if SOURCES.exists() else "",
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image(flavour: Flavour, *, log: Path | None = None) -> Image:
    """The cached image for ``flavour``, built first when its recipe is new."""
    digest = recipe_hash(flavour)
    done = cache_dir() / f"{flavour.name}-{digest}"
    made = Image(
        done, flavour.name, flavour.unlock, f"{COMMON_CMDLINE} {flavour.cmdline(LUKS_UUID)}"
    )
    if (done / "ready").exists():
        return made
    work = cache_dir() / f"{flavour.name}-{digest}.building-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        try:
            _build(flavour, work, log or work / "build.log")
        except BaseException:
            for name in ("build.log", "build-serial.log"):
                if (work / name).exists():
                    shutil.copy(work / name, cache_dir() / f"failed-{flavour.name}-{name}")
            raise
        (work / "ready").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        shutil.rmtree(done, ignore_errors=True)
        work.rename(done)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return made


def _run(argv: list[str], log: Path, **kwargs: object) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        subprocess.run(argv, check=True, stdout=out, stderr=subprocess.STDOUT, **kwargs)  # type: ignore[call-overload]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True
    )


def _build(flavour: Flavour, work: Path, log: Path) -> None:
    keys = Keys(work / "keys")
    keys.dir.mkdir()
    for name in ("bot", "system", "initrd"):
        _keygen(keys.private(name), f"{name}@vm-lab")
    rootdir = work / "root"
    rootdir.mkdir()
    tarball = _rootfs(flavour, log)
    _run(["tar", "-xf", str(tarball), "-C", str(rootdir)], log)
    root = _Root(rootdir, rootdir / INITRD_KEY.lstrip("/"), keys.public("bot"))
    _common(root, keys)
    flavour.prepare(root)
    kernel = sorted((rootdir / "boot").glob("vmlinuz-*"))[-1]
    version = kernel.name.removeprefix("vmlinuz-")
    shutil.copy(kernel, work / "vmlinuz")
    stock_initrd = rootdir / "boot" / f"initrd.img-{version}"
    shutil.copy(stock_initrd, work / "builder-initrd.img")
    script = (Path(__file__).parent / "build-guest.sh").read_text()
    root.write("/usr/local/sbin/deploybot-build", script, 0o755)
    root.write("/etc/deploybot-build.env", _build_env(flavour), 0o600)
    seed = work / "seed.ext4"
    size_mb = _du_mb(rootdir) + 600
    _run(["mkfs.ext4", "-q", "-L", "seed", "-d", str(rootdir), str(seed), f"{size_mb}M"], log)
    shutil.rmtree(rootdir)
    disk = work / "disk.raw"
    _run(["truncate", "-s", DISK_SIZE, str(disk)], log)
    serial = work / "build-serial.log"
    kvm.choose_accelerator(work / "vmlinuz", cache_dir())
    qemu.run_builder(
        kernel=work / "vmlinuz",
        initrd=work / "builder-initrd.img",
        cmdline=BUILDER_CMDLINE,
        disks=[disk, seed],
        serial=serial,
        timeout=1800,
    )
    if BUILD_OK not in serial.read_text(errors="replace"):
        raise RuntimeError(
            f"the builder guest failed; see {cache_dir()}/failed-{flavour.name}-build-serial.log"
        )
    initrd = f"/boot/initrd.img-{version}"
    _run(["debugfs", "-R", f"dump {initrd} {work / 'initrd.img'}", str(seed)], log)
    if not (work / "initrd.img").stat().st_size:
        raise RuntimeError(f"no initramfs came back from the builder; see {serial}")
    seed.unlink()
    (work / "builder-initrd.img").unlink()


def _rootfs(flavour: Flavour, log: Path) -> Path:
    """mmdebstrap's root file system for these packages, kept as a tarball: a change to
    the steps after it does not download or install anything again."""
    packages = sorted({*BASE_PACKAGES, *flavour.packages})
    key = hashlib.sha256(json.dumps([SUITE, packages]).encode()).hexdigest()[:16]
    tarball = cache_dir() / f"rootfs-{key}.tar"
    if tarball.exists():
        return tarball
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(f".partial-{os.getpid()}.tar")
    try:
        _run(
            [
                "mmdebstrap",
                "--variant=apt",
                '--aptopt=Acquire::Check-Valid-Until "false"',
                f"--include={','.join(packages)}",
                '--setup-hook=mkdir -p "$1"/var/cache/apt/archives',
                f"--setup-hook=sync-in {debs}/ /var/cache/apt/archives/",
                "--skip=download/empty",
                f"--customize-hook=sync-out /var/cache/apt/archives {debs}/",
                SUITE,
                str(partial),
                str(SOURCES),
            ],
            log,
            stdin=subprocess.DEVNULL,
        )
        partial.rename(tarball)
    finally:
        partial.unlink(missing_ok=True)
    return tarball


def _build_env(flavour: Flavour) -> str:
    import shlex

    values = {
        "PASSPHRASE": PASSPHRASE,
        "LUKS_UUID": LUKS_UUID,
        "INITRAMFS_COMMAND": flavour.initramfs_command,
        "BUILD_OK": BUILD_OK,
    }
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def _du_mb(path: Path) -> int:
    out = subprocess.run(["du", "-sm", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def _common(root: _Root, keys: Keys) -> None:
    """What every guest has, whatever its initrd."""
    root.write("/etc/hostname", "vmguest\n")
    root.write("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 vmguest\n")
    root.write("/etc/machine-id", "5d1c4ab0c3e94f0a9d2b7e6f8a1c3b5d\n", 0o444)
    root.write("/etc/fstab", "/dev/mapper/root / ext4 errors=remount-ro 0 1\n")
    root.write("/etc/crypttab", f"root UUID={LUKS_UUID} none luks,initramfs\n")
    root.write(
        "/etc/systemd/network/10-eth0.network",
        f"[Match]\nName=eth0\n\n[Network]\nAddress={GUEST_ADDRESS}/24\nGateway={GATEWAY}\n",
    )
    root.chroot(["systemctl", "enable", "systemd-networkd.service"])
    for old in (root.path / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    ssh = root.path / "etc/ssh"
    shutil.copy(keys.private("system"), ssh / "ssh_host_ed25519_key")
    (ssh / "ssh_host_ed25519_key").chmod(0o600)
    shutil.copy(keys.dir / "system.pub", ssh / "ssh_host_ed25519_key.pub")
    root.write(
        "/etc/ssh/sshd_config.d/deploybot-vm.conf",
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nUseDNS no\n",
    )
    root.write("/root/.ssh/authorized_keys", keys.public("bot") + "\n", 0o600)
    (root.path / "root/.ssh").chmod(0o700)
    shutil.copy(keys.private("initrd"), root.initrd_key)
    root.initrd_key.chmod(0o600)
    shutil.copy(keys.dir / "initrd.pub", root.initrd_key.with_suffix(".pub"))
    # The serial console shows the boot; no getty is needed there.
    root.chroot(["systemctl", "mask", "serial-getty@ttyS0.service"])
