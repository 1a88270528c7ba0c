"""bot.sops against the real sops binary and real age keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.core.sops import (
    Problem,
    SopsError,
    SopsErrorKind,
    check_access,
    decrypt_value,
    default_executable,
    sops_env,
)

pytestmark = pytest.mark.timeout(30)

VALUE = "s3cr3t-Välue-🙂"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
PLAIN = (
    f"luks: {json.dumps(VALUE, ensure_ascii=False)}\n"
    "host_key: |\n" + "".join(f"  {line}\n" for line in PRIVATE_KEY.splitlines()) + "other: x1\n"
)


@dataclass
class Vault:
    sops: str
    file: Path
    plain: Path
    env: dict[str, str]
    wrong_env: dict[str, str]
    home: Path


def _age_key(path: Path) -> str:
    out = subprocess.run(
        ["age-keygen", "-o", str(path)], capture_output=True, text=True, check=True
    ).stderr
    return out.split("Public key:")[1].strip()


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    home = tmp_path / "home"
    (home / "cfg").mkdir(parents=True)
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    base["XDG_CONFIG_HOME"] = str(home / "cfg")
    recipient = _age_key(tmp_path / "key.txt")
    _age_key(tmp_path / "wrong.txt")
    plain = tmp_path / "plain.yaml"
    plain.write_text(PLAIN)
    enc = tmp_path / "secrets.yaml"
    sops = default_executable()
    encrypt = [sops, "encrypt", "--input-type", "yaml", "--output-type", "yaml"]
    with plain.open("rb") as src, enc.open("wb") as dst:
        subprocess.run(
            [*encrypt, "--age", recipient, "--filename-override", "s.yaml"],
            stdin=src,
            stdout=dst,
            env={**base, "SOPS_DISABLE_VERSION_CHECK": "1"},
            check=True,
        )
    return Vault(
        sops=sops,
        file=enc,
        plain=plain,
        env={**base, "SOPS_AGE_KEY_FILE": str(tmp_path / "key.txt")},
        wrong_env={**base, "SOPS_AGE_KEY_FILE": str(tmp_path / "wrong.txt")},
        home=home,
    )


def _assert_no_value(text: str) -> None:
    assert VALUE not in text
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in text
    assert "AGE-SECRET-KEY" not in text.upper()


async def _fails(vault: Vault, file: Path, key: str, env: dict[str, str]) -> SopsError:
    with pytest.raises(SopsError) as info:
        await decrypt_value(vault.sops, file, key, env=env)
    _assert_no_value(str(info.value))
    _assert_no_value(repr(info.value))
    assert info.value.__cause__ is None
    return info.value


async def test_decrypts_a_value(vault: Vault) -> None:
    started = time.perf_counter()
    secret = await decrypt_value(vault.sops, vault.file, "luks", env=vault.env)
    print(f"sops decrypt {time.perf_counter() - started:.3f}s")
    assert secret.reveal_str() == VALUE
    assert repr(secret) == "Secret(***)"


async def test_multiline_value_kept_exactly(vault: Vault) -> None:
    secret = await decrypt_value(vault.sops, vault.file, "host_key", env=vault.env)
    assert secret.reveal_str() == PRIVATE_KEY


async def test_wrong_age_key(vault: Vault) -> None:
    err = await _fails(vault, vault.file, "luks", vault.wrong_env)
    assert err.kind is SopsErrorKind.NO_KEY
    assert "no age key can decrypt" in str(err)
    assert "SOPS_AGE_KEY_FILE" in str(err)
    assert str(vault.file) in str(err)


async def test_no_age_key_at_all(vault: Vault) -> None:
    env = {k: v for k, v in vault.env.items() if k != "SOPS_AGE_KEY_FILE"}
    err = await _fails(vault, vault.file, "luks", env)
    assert err.kind is SopsErrorKind.NO_KEY


async def test_missing_key_name(vault: Vault) -> None:
    err = await _fails(vault, vault.file, "nope", vault.env)
    assert err.kind is SopsErrorKind.MISSING_VALUE
    assert str(err) == f"{vault.file} has no key 'nope'"


async def test_plain_file(vault: Vault) -> None:
    err = await _fails(vault, vault.plain, "luks", vault.env)
    assert err.kind is SopsErrorKind.NOT_ENCRYPTED
    assert "not a sops-encrypted file" in str(err)


async def test_missing_file(vault: Vault, tmp_path: Path) -> None:
    err = await _fails(vault, tmp_path / "absent.yaml", "luks", vault.env)
    assert err.kind is SopsErrorKind.NO_FILE
    assert "does not exist" in str(err)


async def test_tampered_ciphertext(vault: Vault, tmp_path: Path) -> None:
    lines = vault.file.read_text().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if line.startswith("luks: ENC[AES256_GCM,data:"))
    head = "luks: ENC[AES256_GCM,data:"
    rest = lines[i][len(head) :]
    lines[i] = head + ("A" if rest[0] != "A" else "B") + rest[1:]
    bad = tmp_path / "tampered.yaml"
    bad.write_text("".join(lines))
    err = await _fails(vault, bad, "luks", vault.env)
    assert err.kind is SopsErrorKind.TAMPERED
    assert "cannot be decrypted" in str(err)


async def test_mac_mismatch(vault: Vault, tmp_path: Path) -> None:
    lines = vault.file.read_text().splitlines(keepends=True)
    bad = tmp_path / "dropped.yaml"
    bad.write_text("".join(line for line in lines if not line.startswith("other:")))
    err = await _fails(vault, bad, "luks", vault.env)
    assert err.kind is SopsErrorKind.TAMPERED
    assert "MAC mismatch" in str(err)


async def test_missing_executable(vault: Vault, tmp_path: Path) -> None:
    with pytest.raises(SopsError) as info:
        await decrypt_value(tmp_path / "no-sops", vault.file, "luks", env=vault.env)
    assert info.value.kind is SopsErrorKind.NO_EXECUTABLE
    assert "DEPLOYBOT_SOPS" in str(info.value)


@pytest.mark.parametrize("key", ["", 'a"]', "a\\b", "a\nb"])
async def test_rejects_odd_key_names(vault: Vault, key: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        await decrypt_value(vault.sops, vault.file, key, env=vault.env)


def _stub(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-sops"
    script.write_text(f"#!{sys.executable}\nimport os, sys, time, json\n{body}\n")
    script.chmod(0o755)
    return script


async def test_environment_is_minimal(tmp_path: Path) -> None:
    dump = tmp_path / "env.json"
    stub = _stub(
        tmp_path,
        f"json.dump({{'env': dict(os.environ), 'argv': sys.argv[1:]}}, open({str(dump)!r}, 'w'))\n"
        "sys.stdout.write('v')",
    )
    source = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/h",
        "SOPS_AGE_KEY": "AGE-SECRET-KEY-1XYZ",
        "TELEGRAM_BOT_TOKEN": "123:abc",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    secret = await decrypt_value(stub, Path("f.yaml"), "k_1", env=source)
    assert secret.reveal() == b"v"
    seen = json.loads(dump.read_text())
    env = {k: v for k, v in seen["env"].items() if k != "LC_CTYPE"}
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/h",
        "SOPS_AGE_KEY": "AGE-SECRET-KEY-1XYZ",
        "SOPS_DISABLE_VERSION_CHECK": "1",
    }
    assert seen["argv"] == ["decrypt", "--extract", '["k_1"]', "f.yaml"]
    assert "TELEGRAM_BOT_TOKEN" not in sops_env(source)


async def test_unknown_failure_excerpt_is_sanitized(tmp_path: Path) -> None:
    stub = _stub(
        tmp_path,
        "sys.stdout.write('the-value')\n"
        "sys.stderr.write('weird: the-value AGE-SECRET-KEY-1QQQQ ' + 'x' * 5000 + '\\n')\n"
        "sys.exit(7)",
    )
    with pytest.raises(SopsError) as info:
        await decrypt_value(stub, Path("f.yaml"), "k", env={"SOPS_AGE_KEY": "AGE-SECRET-KEY-1QQQQ"})
    text = str(info.value)
    assert info.value.kind is SopsErrorKind.FAILED
    assert "exit 7" in text
    assert "the-value" not in text
    assert "QQQQ" not in text
    assert len(text) < 400


async def test_timeout_kills_sops(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    stub = _stub(tmp_path, f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)")
    started = time.perf_counter()
    with pytest.raises(SopsError) as info:
        await decrypt_value(stub, Path("f.yaml"), "k", env={}, timeout=0.5)
    assert info.value.kind is SopsErrorKind.TIMEOUT
    assert time.perf_counter() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)


async def test_check_access_reports_only_problems(vault: Vault) -> None:
    problems = await check_access(vault.sops, vault.file, ["luks", "nope", "host_key"], vault.env)
    assert problems == [
        Problem(vault.file, "nope", SopsErrorKind.MISSING_VALUE, f"{vault.file} has no key 'nope'")
    ]
    assert await check_access(vault.sops, vault.file, ["luks", "other"], vault.env) == []
    assert await check_access(vault.sops, vault.file, [], vault.env) == []


async def test_check_access_file_problem_reported_once(vault: Vault) -> None:
    problems = await check_access(vault.sops, vault.file, ["luks", "other"], vault.wrong_env)
    assert len(problems) == 1
    assert problems[0].key is None
    assert problems[0].kind is SopsErrorKind.NO_KEY
    _assert_no_value(problems[0].message)
