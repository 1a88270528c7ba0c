"""Building an update's system and copying it to the machine with the ``nix`` command.

``nix build`` runs where the bot runs; ``nix copy`` reaches the machine through the
system ``ssh``, which Nix configures only through ``NIX_SSHOPTS``: the bot writes the
pinned key into a known_hosts file of its own and makes ssh refuse any other key
(``docs/updates.md``). Both run in their own process group, their output is handed over
line by line, and cancelling the job stops the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.core.keys import parse_public_key

GLOBAL_FLAGS = ("--extra-experimental-features", "nix-command flakes")
MAX_LINE = 2000
KILL_GRACE = 5.0
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# A store path as Nix prints it: the hash part, then a name without slashes or spaces.
STORE_PATH = re.compile(r"/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,200}")

LineCallback = Callable[[str], object]


class NixError(Exception):
    """nix could not be started, or its output makes no sense; the message says why."""


@dataclass(frozen=True)
class Finished:
    """A nix run that ended: its status, its stdout lines and its last stderr line."""

    code: int
    stdout: list[str]
    last: str


def toplevel_ref(flake: str, attr: str) -> str:
    """The flake output ``nixos-rebuild`` builds for ``attr``."""
    return f'{flake}#nixosConfigurations."{attr}".config.system.build.toplevel'


def build_argv(nix: Sequence[str], *, flake: str, attr: str) -> list[str]:
    return [
        *nix,
        *GLOBAL_FLAGS,
        "build",
        "--no-link",
        "--print-out-paths",
        toplevel_ref(flake, attr),
    ]


def copy_argv(nix: Sequence[str], *, user: str, host: str, path: str) -> list[str]:
    # The port goes in NIX_SSHOPTS: Nix before 2.31 hands "host:port" to ssh as a name.
    return [*nix, *GLOBAL_FLAGS, "copy", "--to", f"ssh://{user}@{host}", path]


def known_hosts_line(host: str, port: int, key: str) -> str:
    """The pinned key as OpenSSH's known_hosts writes it for ``host:port``."""
    parsed = parse_public_key(key)
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {parsed.line(with_comment=False)}\n"


def write_known_hosts(path: Path, host: str, port: int, key: str) -> None:
    """Write the pinned key alone into ``path`` (mode 0600, in a 0700 folder)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(known_hosts_line(host, port, key))


def ssh_options(*, known_hosts: Path, client_key: Path, port: int) -> str:
    """``NIX_SSHOPTS`` that trust only the pinned key and use only the bot's key.

    Nix splits the value on whitespace, so a path with a space cannot be passed safely.
    """
    for path in (known_hosts, client_key):
        if any(c.isspace() for c in str(path)):
            raise NixError(f"{path}: NIX_SSHOPTS cannot carry a path with spaces")
    return " ".join(
        [
            "-F none",
            f"-o UserKnownHostsFile={known_hosts}",
            "-o GlobalKnownHostsFile=/dev/null",
            "-o StrictHostKeyChecking=yes",
            "-o UpdateHostKeys=no",
            "-o BatchMode=yes",
            "-o IdentitiesOnly=yes",
            "-o IdentityAgent=none",
            f"-i {client_key}",
            f"-p {port}",
        ]
    )


def built_path(lines: Sequence[str]) -> str | None:
    """The toplevel ``nix build --print-out-paths`` printed (its last store path line)."""
    for line in reversed(lines):
        if STORE_PATH.fullmatch(line.strip()) and not line.strip().endswith(".drv"):
            return line.strip()
    return None


def clean_line(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    text = _CONTROL.sub("", text)
    return text[:MAX_LINE] + (" …" if len(text) > MAX_LINE else "")


async def run_nix(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    on_line: LineCallback,
    timeout: float,
) -> Finished:
    """Run nix; stderr lines go to ``on_line`` as they come, stdout is kept (bounded)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise NixError(
            f"cannot start {argv[0]!r}: {exc.strerror or exc}; check DEPLOYBOT_NIX"
        ) from None
    assert proc.stdout is not None
    assert proc.stderr is not None
    stdout: list[str] = []
    last = [""]

    async def errors(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = clean_line(raw)
            if line.strip():
                last[0] = line
            on_line(line)

    async def output(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            if len(stdout) < 1000:
                stdout.append(clean_line(raw))

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(errors(proc.stderr), output(proc.stdout))
            code = await proc.wait()
    except TimeoutError:
        await _stop(proc)
        raise NixError(f"{argv[0]} did not finish within {timeout:g} s; it was stopped") from None
    except BaseException:
        await asyncio.shield(_stop(proc))
        raise
    return Finished(code, stdout, last[0])


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, then SIGKILL it after a grace period."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
