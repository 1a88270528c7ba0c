"""nixos-anywhere's command line, built so nothing can pose as a flag."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from bot.remote.nix import STORE_PATH

DEFAULT_PREFIX = "nix run github:nix-community/nixos-anywhere --"
DISK_KEY_REMOTE = "/tmp/disk.key"  # noqa: S108 - the path disko reads, in the installer's RAM
DISK_KEY_FD_AUTO = -1
DISK_KEY_SOURCE = "/dev/fd/@DISK_KEY@"
_INSTALL_PHASES = frozenset({"kexec", "disko", "install", "reboot"})

_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_ATTR = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.'+-]{0,199}")
_HOST = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:%-]{0,252}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_REMOTE_PATH = re.compile(r"/[A-Za-z0-9_./-]{1,255}")
_SSH_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9]*=[^\s\x00-\x1f\x7f]*")


def parse_prefix(setting: str | None) -> list[str]:
    """DEPLOYBOT_NIXOS_ANYWHERE split like a shell would (never run through one)."""
    words = shlex.split(setting if setting and setting.strip() else DEFAULT_PREFIX)
    if not words:
        raise ValueError("DEPLOYBOT_NIXOS_ANYWHERE is empty")
    return words


def build_argv(
    prefix: list[str],
    *,
    flake: str,
    attr: str,
    target_host: str,
    ssh_port: int,
    ssh_key: Path,
    extra_files: Path | None,
    disk_key_fd: int | None,
    ssh_options: Sequence[str] = (),
    print_build_logs: bool = True,
    target_user: str = "root",
    disk_key_remote: str = DISK_KEY_REMOTE,
    phases: Sequence[str] | None = None,
    store_paths: tuple[str, str] | None = None,
) -> list[str]:
    """The nixos-anywhere command line; ValueError if any value could pose as a flag.

    With ``store_paths`` (built beforehand) it installs those and is given no ``--flake``,
    so it connects at once; ``flake`` and ``attr`` are still checked.

    ``disk_key_fd=DISK_KEY_FD_AUTO`` leaves the placeholder :data:`DISK_KEY_SOURCE` that
    :func:`run_nixos_anywhere` replaces with the pipe it creates.
    """
    if not prefix or any(not isinstance(w, str) or not w for w in prefix):
        raise ValueError("the nixos-anywhere command prefix is empty")
    _check("flake", flake, None)
    if "#" in flake:
        raise ValueError("flake must not contain '#': the attribute is given separately")
    _check("flake attribute", attr, _ATTR)
    _check("target host", target_host, _HOST)
    _check("ssh user", target_user, _USER)
    if isinstance(ssh_port, bool) or not isinstance(ssh_port, int) or not 0 < ssh_port < 65536:
        raise ValueError(f"ssh port must be 1-65535, not {ssh_port!r}")
    if store_paths is None:
        argv = [*prefix, "--flake", f"{flake}#{attr}"]
    else:
        # Not with --flake: given a flake the script evaluates and builds it again before
        # its first ssh, whatever --store-paths says (docs/nixos-anywhere.md).
        for path in store_paths:
            if not isinstance(path, str) or not STORE_PATH.fullmatch(path):
                raise ValueError(f"store path must be /nix/store/<hash>-<name>: {path!r}")
        argv = [*prefix, "--store-paths", *store_paths]
    if extra_files is not None:
        argv += ["--extra-files", _path("extra files", extra_files)]
    argv += ["-i", _path("ssh key", ssh_key), "-p", str(ssh_port)]
    for option in ssh_options:
        if not isinstance(option, str) or not _SSH_OPTION.fullmatch(option):
            raise ValueError(f"ssh option must look like Key=value without spaces: {option!r}")
        argv += ["--ssh-option", option]
    if disk_key_fd is not None:
        _check("disk key path", disk_key_remote, _REMOTE_PATH)
        if disk_key_fd == DISK_KEY_FD_AUTO:
            source = DISK_KEY_SOURCE
        elif (
            isinstance(disk_key_fd, int) and not isinstance(disk_key_fd, bool) and disk_key_fd >= 0
        ):
            source = f"/dev/fd/{disk_key_fd}"
        else:
            raise ValueError(f"disk key fd must be a file descriptor, not {disk_key_fd!r}")
        argv += ["--disk-encryption-keys", disk_key_remote, source]
    if phases is not None:
        unknown = [p for p in phases if p not in _INSTALL_PHASES]
        if unknown or not phases:
            raise ValueError(f"phases must be some of kexec,disko,install,reboot, not {phases!r}")
        argv += ["--phases", ",".join(phases)]
    if print_build_logs:
        argv.append("-L")
    argv += ["--target-host", f"{target_user}@{target_host}"]
    return argv


def _check(what: str, value: str, pattern: re.Pattern[str] | None) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is empty")
    if value.startswith("-"):
        raise ValueError(f"{what} must not start with '-': {value[:60]!r}")
    if _BAD_CHARS.search(value):
        raise ValueError(
            f"{what} must not contain whitespace or control characters: {value[:60]!r}"
        )
    if pattern is not None and not pattern.fullmatch(value):
        raise ValueError(f"{what} has characters that are not allowed: {value[:60]!r}")


def _path(what: str, value: Path) -> str:
    text = os.fspath(value)
    if not text or re.search(r"[\x00-\x1f\x7f]", text):
        raise ValueError(f"{what} path is empty or has control characters")
    return os.fspath(Path(text).absolute())
