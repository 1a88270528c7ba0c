"""Running nixos-anywhere: the one process runner (``bot.remote.process``) with the disk key
through a pipe named where argv says :data:`DISK_KEY_SOURCE`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bot.core.secret import Secret
from bot.flows.deploy.nixos_anywhere.argv import DISK_KEY_SOURCE
from bot.remote.process import (
    DRAIN_TIMEOUT,
    KILL_GRACE,
    MAX_LINE,
    Check,
    Child,
    LineCallback,
    ProcessError,
    ProcessStopped,
    ProcessTimeout,
    run_process,
)

NixosAnywhereError = ProcessError
NixosAnywhereTimeout = ProcessTimeout
NixosAnywhereStopped = ProcessStopped


async def run_nixos_anywhere(
    argv: Sequence[str],
    *,
    disk_key: Secret | None,
    on_line: LineCallback,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    timeout: float,
    redact_also: Iterable[Secret] = (),
    max_line: int = MAX_LINE,
    kill_grace: float = KILL_GRACE,
    drain_timeout: float = DRAIN_TIMEOUT,
    check: Check | None = None,
    check_interval: float = 1.0,
) -> int:
    """nixos-anywhere's exit status; with ``disk_key``, argv names :data:`DISK_KEY_SOURCE`
    once and the key arrives through that pipe (``run_process`` says the rest)."""
    return await run_process(
        Child(argv, "nixos-anywhere", "DEPLOYBOT_NIXOS_ANYWHERE"),
        on_line=on_line,
        env=env,
        cwd=cwd,
        timeout=timeout,
        secret=disk_key,
        secret_slot=DISK_KEY_SOURCE,
        redact_also=redact_also,
        max_line=max_line,
        kill_grace=kill_grace,
        drain_timeout=drain_timeout,
        check=check,
        check_interval=check_interval,
    )
