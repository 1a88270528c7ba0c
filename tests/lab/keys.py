"""SSH keys and LUKS headers, made and checked with the real tools.

Secrets (passphrases) always travel through stdin, never through argv or files.
Standard library only: the lab shell uses the LUKS checks.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

LUKS_IMAGE_BYTES = 2 * 1024 * 1024
LUKS_FORMAT_OPTIONS = (
    "--type",
    "luks2",
    "--pbkdf",
    "pbkdf2",
    "--pbkdf-force-iterations",
    "1000",
    "--key-size",
    "256",
    "--luks2-metadata-size",
    "16k",
    "--luks2-keyslots-size",
    "256k",
    "--batch-mode",
)


def cryptsetup_path() -> str:
    found = shutil.which("cryptsetup") or shutil.which("cryptsetup", path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("cryptsetup is not installed (apt-get install cryptsetup-bin)")
    return found


def generate_ed25519(path: Path, comment: str) -> str:
    """Write a fresh passphrase-less ed25519 key pair; return the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return public_key_line(path.with_name(path.name + ".pub").read_text())


def public_key_of(private_key: Path) -> str:
    """The ``ssh-ed25519 AAAA…`` line of a private key file (as ``ssh-keygen -y``)."""
    out = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private_key)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return public_key_line(out)


def public_key_line(text: str) -> str:
    """``type base64`` without the comment: the form the bot pins and compares."""
    fields = text.split()
    return f"{fields[0]} {fields[1]}"


def luks_format(cryptsetup: str, image: Path, key: bytes) -> None:
    """Make ``image`` a LUKS2 disk whose only keyslot opens with ``key``."""
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(LUKS_IMAGE_BYTES)
    subprocess.run(
        [cryptsetup, "luksFormat", *LUKS_FORMAT_OPTIONS, "--key-file", "-", str(image)],
        input=key,
        check=True,
        capture_output=True,
    )


def luks_opens(cryptsetup: str, image: Path, key: bytes) -> bool:
    """Whether ``key`` opens ``image`` (``cryptsetup open --test-passphrase``)."""
    result = subprocess.run(
        [cryptsetup, "open", "--test-passphrase", "--key-file", "-", str(image)],
        input=key,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0
