"""SSH key material for new machines: ed25519 keys, public-key lines, fingerprints, machine ids.

Everything here is pure computation (no files, no subprocesses) so it is safe on the event
loop; results match what ``ssh-keygen -y`` / ``ssh-keygen -lf`` and
``systemd-machine-id-setup`` produce, because operators compare them with those tools.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import struct
from collections.abc import Collection
from dataclasses import dataclass

import asyncssh

from bot.core.secret import Secret
from bot.core.text import has_control

__all__ = [
    "ED25519",
    "KNOWN_KEY_TYPES",
    "KeyPair",
    "PublicKey",
    "fingerprint",
    "generate_ed25519",
    "new_machine_id",
    "parse_public_key",
    "public_from_private",
]

ED25519 = "ssh-ed25519"
KNOWN_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


@dataclass(frozen=True)
class PublicKey:
    """A parsed ``<type> <base64> [comment]`` line."""

    key_type: str
    blob: bytes
    comment: str = ""

    def line(self, *, with_comment: bool = True) -> str:
        """The OpenSSH one-line form."""
        parts = [self.key_type, base64.b64encode(self.blob).decode("ascii")]
        if with_comment and self.comment:
            parts.append(self.comment)
        return " ".join(parts)

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` exactly as ``ssh-keygen -lf`` prints it."""
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class KeyPair:
    """A fresh key: the OpenSSH private key (unencrypted PEM text) and its public line."""

    private: Secret
    public: str


def generate_ed25519(comment: str = "") -> KeyPair:
    """Generate an ed25519 key, as ``ssh-keygen -t ed25519 -N ''`` would."""
    _check_comment(comment)
    key = asyncssh.generate_private_key(ED25519, comment=comment or None)
    private = Secret(key.export_private_key("openssh"))
    return KeyPair(private=private, public=_public_line(key, comment))


def public_from_private(private: Secret | bytes | str, *, comment: str | None = None) -> str:
    """Derive the public-key line from an OpenSSH private key, like ``ssh-keygen -y``.

    ``comment`` overrides the comment stored in the private key.
    """
    raw = private.reveal() if isinstance(private, Secret) else private
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    try:
        key = asyncssh.import_private_key(data)
    except asyncssh.KeyEncryptionError:
        raise ValueError("the private key is encrypted with a passphrase") from None
    except asyncssh.KeyImportError as exc:
        if "passphrase" in str(exc).lower():
            raise ValueError("the private key is encrypted with a passphrase") from None
        raise ValueError("not a valid OpenSSH/PEM private key") from None
    finally:
        del data
    if comment is None:
        stored = key.get_comment()
        comment = stored or ""
    _check_comment(comment)
    return _public_line(key, comment)


def parse_public_key(line: str, *, allowed: Collection[str] | None = None) -> PublicKey:
    """Parse and validate one public-key line; ValueError says exactly what is wrong."""
    if not isinstance(line, str):
        raise ValueError(f"public key must be text, not {type(line).__name__}")
    text = line.strip()
    if not text:
        raise ValueError("public key is empty")
    if "\n" in text or "\r" in text:
        raise ValueError("public key must be a single line")
    if has_control(text.replace("\t", " ")):
        raise ValueError("public key contains control characters")
    fields = text.split(None, 2)
    key_type = fields[0]
    if key_type not in KNOWN_KEY_TYPES:
        if "=" in key_type or "," in key_type or '"' in key_type:
            raise ValueError(
                f"public key starts with options ({key_type[:40]!r}); give only "
                "'<type> <base64> [comment]'"
            )
        known = ", ".join(sorted(KNOWN_KEY_TYPES))
        raise ValueError(f"unknown key type {key_type[:40]!r}; expected one of {known}")
    if allowed is not None and key_type not in allowed:
        raise ValueError(f"key type is {key_type}, expected {' or '.join(sorted(allowed))}")
    if len(fields) < 2:
        raise ValueError(f"public key has no key data after {key_type!r}")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public key data is not valid base64") from None
    inner = _leading_string(blob)
    if inner is None:
        raise ValueError("public key data is truncated or malformed")
    if inner != key_type:
        raise ValueError(f"public key data is a {inner[:40]!r} key but the line says {key_type}")
    try:
        asyncssh.import_public_key(f"{key_type} {fields[1]}")
    except (asyncssh.KeyImportError, ValueError):
        raise ValueError(f"public key data is not a valid {key_type} key") from None
    comment = fields[2] if len(fields) > 2 else ""
    return PublicKey(key_type=key_type, blob=blob, comment=comment)


def fingerprint(public_key_line: str) -> str:
    """``SHA256:…`` of a public-key line, the same as ``ssh-keygen -lf``."""
    return parse_public_key(public_key_line).fingerprint


def new_machine_id() -> str:
    """A fresh /etc/machine-id: 32 lowercase hex digits and a newline.

    Like systemd, the random 128 bits are formatted as a version-4 UUID, so the value is
    never all zeros (which systemd treats as "no id").
    """
    raw = bytearray(secrets.token_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex() + "\n"


def _public_line(key: asyncssh.SSHKey, comment: str) -> str:
    blob = key.public_data
    return PublicKey(key_type=key.get_algorithm(), blob=blob, comment=comment).line()


def _leading_string(blob: bytes) -> str | None:
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length == 0 or len(blob) < 4 + length:
        return None
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def _check_comment(comment: str) -> None:
    if has_control(comment.replace("\t", " ")):
        raise ValueError("key comment must be one line without control characters")
