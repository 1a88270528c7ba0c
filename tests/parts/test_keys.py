"""bot.keys, checked against the real ssh-keygen."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bot.core import keys
from bot.core.secret import Secret


def _keygen(*args: str) -> str:
    return subprocess.run(
        ["ssh-keygen", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_generated_key_matches_ssh_keygen(tmp_path: Path) -> None:
    pair = keys.generate_ed25519("initrd@clawsiecats")
    assert isinstance(pair.private, Secret)
    assert "PRIVATE" not in repr(pair)
    path = tmp_path / "ssh_host_ed25519_key"
    path.write_bytes(pair.private.reveal())
    path.chmod(0o600)
    assert pair.private.reveal().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    derived = _keygen("-y", "-f", str(path))
    assert derived.split()[:2] == pair.public.split()[:2]
    assert pair.public.startswith("ssh-ed25519 AAAA")
    assert pair.public.endswith(" initrd@clawsiecats")
    pub = tmp_path / "k.pub"
    pub.write_text(pair.public + "\n")
    listed = _keygen("-lf", str(pub))
    assert listed.split()[1] == keys.fingerprint(pair.public)
    assert listed.startswith("256 SHA256:")


def test_public_from_private_like_ssh_keygen_y(tmp_path: Path) -> None:
    path = tmp_path / "id"
    _keygen("-q", "-t", "ed25519", "-N", "", "-C", "made-by-ssh-keygen", "-f", str(path))
    private = path.read_bytes()
    expected = _keygen("-y", "-f", str(path))
    assert keys.public_from_private(private) == expected
    assert keys.public_from_private(Secret(private)) == expected
    assert keys.public_from_private(private.decode(), comment="") == " ".join(expected.split()[:2])
    assert keys.public_from_private(private, comment="other").endswith(" other")
    rsa = tmp_path / "rsa"
    _keygen("-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "", "-f", str(rsa))
    assert (
        keys.public_from_private(rsa.read_bytes()).split()[:2]
        == _keygen("-y", "-f", str(rsa)).split()[:2]
    )


def test_public_from_private_errors(tmp_path: Path) -> None:
    path = tmp_path / "enc"
    _keygen("-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(path))
    with pytest.raises(ValueError, match="encrypted with a passphrase"):
        keys.public_from_private(path.read_bytes())
    with pytest.raises(ValueError, match="not a valid"):
        keys.public_from_private(b"-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n")
    with pytest.raises(ValueError, match="not a valid"):
        keys.public_from_private("")


def test_fingerprint_of_ssh_keygen_keys(tmp_path: Path) -> None:
    for kind in ("ed25519", "ecdsa"):
        path = tmp_path / kind
        _keygen("-q", "-t", kind, "-N", "", "-f", str(path))
        line = (tmp_path / f"{kind}.pub").read_text()
        assert keys.fingerprint(line) == _keygen("-lf", str(path) + ".pub").split()[1]
        parsed = keys.parse_public_key(line)
        assert parsed.line() == line.strip()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("ssh-ed25519", "no key data"),
        ("ssh-ed25519 AAAA\nssh-ed25519 AAAA", "single line"),
        ("ssh-ed25519 AAAA\x00", "control"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "unknown key type"),
        ('no-pty,command="x" ssh-ed25519 AAAA', "options"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        ("ssh-ed25519 AAAA", "truncated"),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGVvfxy/QHAh2Kla7uLMUF2yrSyjAAg1iw9zaOe7ovba", "says"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAEAEBAQEBAQEBAQEBAQEBAQE=", "not a valid ssh-ed25519"),
    ],
)
def test_parse_public_key_errors(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        keys.parse_public_key(line)


def test_parse_public_key_allowed_types() -> None:
    line = keys.generate_ed25519().public
    assert keys.parse_public_key(line, allowed={"ssh-ed25519"}).key_type == "ssh-ed25519"
    with pytest.raises(ValueError, match="expected ssh-rsa"):
        keys.parse_public_key(line, allowed={"ssh-rsa"})


def test_parse_keeps_comment_with_spaces() -> None:
    bare = keys.generate_ed25519().public
    parsed = keys.parse_public_key(f"  {bare} my laptop key \n")
    assert parsed.comment == "my laptop key"
    assert parsed.line(with_comment=False) == bare


def test_comment_must_be_one_line() -> None:
    with pytest.raises(ValueError, match="comment"):
        keys.generate_ed25519("a\nb")


def test_machine_id() -> None:
    ids = {keys.new_machine_id() for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        assert re.fullmatch(r"[0-9a-f]{32}\n", value)
        assert value.strip() != "0" * 32
        assert value[12] == "4"
        assert value[16] in "89ab"
