"""What an install stages: the files nixos-anywhere copies to the target (``--extra-files``).

Laid out as the manual procedure does: the initrd host key in ``boot/``, the machine id
and the host's own SSH key under the persist root. The folder itself (``bot.jobs.staging``)
is 0700 and removed as soon as nixos-anywhere exits, whatever the outcome (and at the
latest when the job ends).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bot.core.keys import generate_ed25519, new_machine_id, public_from_private
from bot.core.secret import Secret


@dataclass(frozen=True)
class Staged:
    root: Path
    machine_id: str
    initrd_public_key: str
    host_public_key: str


def persist_root(root: Path, persist_dir: str) -> Path:
    """``root`` joined with the machine's persist dir ("" or "/" mean the root itself)."""
    relative = PurePosixPath(persist_dir or "/").relative_to("/")
    if ".." in relative.parts:
        raise ValueError(f"persist_dir {persist_dir!r} must not contain '..'")
    return root.joinpath(*relative.parts)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def stage(root: Path, *, persist_dir: str, host_key: Secret, machine: str) -> Staged:
    """Write the extra files (blocking: run it in a thread). ``host_key`` is an OpenSSH key."""
    persist = persist_root(root, persist_dir)
    machine_id = new_machine_id()
    _write(persist / "etc" / "machine-id", machine_id.encode(), 0o644)
    initrd = generate_ed25519(comment=f"{machine}-initrd")
    _write(root / "boot" / "ssh_host_ed25519_key", initrd.private.reveal(), 0o600)
    initrd.private.wipe()
    host_public = public_from_private(host_key, comment=f"root@{machine}")
    ssh_dir = persist / "etc" / "ssh"
    _write(ssh_dir / "ssh_host_ed25519_key", _with_newline(host_key.reveal()), 0o600)
    _write(ssh_dir / "ssh_host_ed25519_key.pub", (host_public + "\n").encode(), 0o644)
    for directory in (root / "boot", persist / "etc" / "ssh"):
        os.chmod(directory, 0o755)  # noqa: S103 - /boot and /etc/ssh are world-readable on the target
    return Staged(
        root=root,
        machine_id=machine_id.strip(),
        initrd_public_key=initrd.public,
        host_public_key=host_public,
    )


def _with_newline(data: bytes) -> bytes:
    """sops returns values without a trailing newline; OpenSSH wants one after the key."""
    return data if data.endswith(b"\n") else data + b"\n"
