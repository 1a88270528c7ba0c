"""Which host keys a machine must present, and where each one came from.

A machine's keys come from, first match wins: what the bot recorded when it installed it;
``host_key`` / ``initrd_host_key`` in the inventory; the public half of the sops-held
``host_key_secret``; for the initrd key, the public half of ``initrd_host_key_file`` read
over a pinned login to the booted system; and ``/adopt``, pinned when a person confirmed
the presented fingerprint. Keys from two sources that differ are a contradiction: that key
is pinned to nothing (nobody can tell which one is the machine) until a person fixes it, so
the machine is never reported healthy and no passphrase goes out. See docs/keys.md.

The sops-derived public key is computed in memory from the decrypted private key, which is
wiped at once and never written anywhere; only the public half is cached, per sops file
version, so probes do not run sops every minute.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bot.config.inventory import Machine
from bot.core.keys import fingerprint, public_from_private
from bot.core.sops import SopsError, SopsReader
from bot.remote.place import Pins, same_key
from store import MachineState

RECORDED = "recorded at deploy"
INVENTORY_SYSTEM = "host_key in the inventory"
INVENTORY_INITRD = "initrd_host_key in the inventory"
ADOPTED = "confirmed with /adopt"
#: A failed sops read is tried again after this long (a fixed file is seen at once).
RETRY_FAILED = 300.0
#: sops processes at a time. A fleet's first probes each need their machine's key: without
#: a bound, a thousand machines start a thousand sops processes at once, and the event loop
#: spends itself starting and reaping them while people wait for an answer.
SOPS_AT_ONCE = 4


def sops_source(machine: Machine) -> str:
    return f"sops ({machine.host_key_secret})"


def booted_source(path: str) -> str:
    return f"read from the booted system ({path})"


def adopted_source(by: str) -> str:
    return f"{ADOPTED} by {by}"


@dataclass(frozen=True)
class Candidate:
    """One source's opinion of a key."""

    source: str
    key: str
    rank: int


def _rank(source: str) -> int:
    """The order of the sources (see the module docstring)."""
    if source.startswith(ADOPTED):
        return 4
    if source.startswith("read from the booted system"):
        return 3
    return 0  # recorded at deploy (and rows from before sources were kept)


def _choose(what: str, candidates: list[Candidate]) -> tuple[str, str, tuple[str, ...]]:
    """The winning key and its source, and every contradiction among the candidates."""
    present = sorted((c for c in candidates if c.key), key=lambda c: c.rank)
    if not present:
        return "", "", ()
    first = present[0]
    conflicts = tuple(
        f"{what}: {first.source} {_fp(first.key)} ≠ {other.source} {_fp(other.key)}"
        for other in present[1:]
        if not same_key(first.key, other.key)
    )
    if conflicts:
        return "", "", conflicts
    return first.key, first.source, ()


def _fp(key: str) -> str:
    try:
        return fingerprint(key)
    except ValueError:
        return "(unreadable key)"


def resolve(machine: Machine, known: MachineState, sops_key: str = "") -> Pins:
    """The pins of ``machine`` from every source (pure: the sops key is derived by the caller)."""
    recorded_system = known.host_key_source or RECORDED
    recorded_initrd = known.initrd_host_key_source or RECORDED
    system = [
        Candidate(recorded_system, known.host_key, _rank(recorded_system)),
        Candidate(INVENTORY_SYSTEM, machine.host_key, 1),
        Candidate(sops_source(machine), sops_key, 2),
    ]
    initrd = [
        Candidate(recorded_initrd, known.initrd_host_key, _rank(recorded_initrd)),
        Candidate(INVENTORY_INITRD, machine.initrd_host_key, 1),
    ]
    system_key, system_source, system_conflicts = _choose("system key", system)
    initrd_key, initrd_source, initrd_conflicts = _choose("initrd key", initrd)
    return Pins(
        system=system_key,
        initrd=initrd_key,
        installer=known.installer_host_key,
        initrd_source=initrd_source,
        system_source=system_source,
        conflicts=system_conflicts + initrd_conflicts,
        installed=bool(known.installed_at or known.boot_id or known.host_key),
    )


def describe(machine: Machine, pins: Pins) -> list[str]:
    """One line per key: its fingerprint and where it came from (what /status and
    ``deploybot check`` show)."""
    lines = []
    if pins.system:
        lines.append(f"system key {_fp(pins.system)} ({pins.system_source})")
    elif not any(c.startswith("system key") for c in pins.conflicts):
        lines.append(f"system key: none (/adopt {machine.name} pins the key it presents)")
    if machine.luks:
        if pins.initrd:
            lines.append(f"initrd key {_fp(pins.initrd)} ({pins.initrd_source})")
        elif not any(c.startswith("initrd key") for c in pins.conflicts):
            where = machine.initrd_host_key_file
            later = f"read from {where} once the system is up" if where else "none pinned"
            lines.append(f"initrd key: none yet ({later})")
    lines += [f"⚠️ contradiction, {c}" for c in pins.conflicts]
    return lines


@dataclass(frozen=True)
class _Cached:
    version: tuple[int, int, int]
    key: str
    problem: str
    at: float


class SopsHostKeys:
    """The public halves of machines' sops-held host keys, derived once per file version."""

    def __init__(self, sops: SopsReader | None) -> None:
        self.sops = sops
        self._cache: dict[tuple[Path, str], _Cached] = {}
        self._locks: dict[tuple[Path, str], asyncio.Lock] = {}
        self._running = asyncio.Semaphore(SOPS_AT_ONCE)

    async def public_key(self, machine: Machine) -> tuple[str, str]:
        """(the public key line, "") or ("", why there is none)."""
        if self.sops is None or not machine.host_key_secret or machine.secrets_file is None:
            return "", ""
        where = (machine.secrets_file, machine.host_key_secret)
        lock = self._locks.setdefault(where, asyncio.Lock())
        async with lock:
            version = _version(machine.secrets_file)
            cached = self._cache.get(where)
            if cached is not None and cached.version == version:
                fresh = cached.key or time.monotonic() - cached.at < RETRY_FAILED
                if fresh:
                    return cached.key, cached.problem
            key, problem = await self._derive(machine.secrets_file, machine.host_key_secret)
            self._cache[where] = _Cached(version, key, problem, time.monotonic())
            return key, problem

    async def _derive(self, file: Path, name: str) -> tuple[str, str]:
        assert self.sops is not None
        try:
            async with self._running:
                secret = await self.sops.value(file, name)
        except (SopsError, ValueError) as exc:
            return "", str(exc)
        try:
            return public_from_private(secret, comment=""), ""
        except ValueError as exc:
            return "", f"{name} in {file} is not an OpenSSH private key ({exc})"
        finally:
            secret.wipe()


def _version(path: Path) -> tuple[int, int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (info.st_mtime_ns, info.st_size, info.st_ino)
