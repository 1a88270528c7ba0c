"""Following a machine through a reboot: down, then its initrd or its booted system.

"Up" always means "answers with the pinned key": an installer still answering on port 22
with its own key, or anything else with the wrong key, is not the machine we installed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import Enum

from bot.config.inventory import Machine
from bot.core.keys import parse_public_key
from bot.remote.ssh import SshError, fetch_host_key

FETCH_TIMEOUT = 3.0


class Seen(Enum):
    INITRD = "initrd"
    SYSTEM = "system"
    WRONG_KEY = "wrong key"
    NOTHING = "nothing"


def same_key(a: str, b: str) -> bool:
    """Whether two public key lines are the same key (comments do not matter)."""
    try:
        ka, kb = parse_public_key(a), parse_public_key(b)
    except ValueError:
        return False
    return (ka.key_type, ka.blob) == (kb.key_type, kb.blob)


@dataclass(frozen=True)
class Sighting:
    seen: Seen
    presented: str = ""
    where: str = ""


async def presented_key(host: str, port: int, *, timeout: float) -> tuple[str | None, str]:
    """The host key a port presents, or None and why nothing answered (never raises)."""
    try:
        return await fetch_host_key(host, port, timeout=timeout), ""
    except SshError as exc:
        return None, str(exc)


async def look(
    machine: Machine, *, host_key: str, initrd_key: str, timeout: float = FETCH_TIMEOUT
) -> Sighting:
    """One look at both ports: which pinned key answers, if any."""
    ports = [machine.ssh_port] + ([machine.initrd_port] if machine.luks else [])
    keys = await asyncio.gather(*(presented_key(machine.host, p, timeout=timeout) for p in ports))
    system = keys[0][0]
    initrd = keys[1][0] if machine.luks else None
    if system is not None and host_key and same_key(system, host_key):
        return Sighting(Seen.SYSTEM, system, f"{machine.host}:{machine.ssh_port}")
    if initrd is not None and initrd_key and same_key(initrd, initrd_key):
        return Sighting(Seen.INITRD, initrd, f"{machine.host}:{machine.initrd_port}")
    if initrd is not None:
        return Sighting(Seen.WRONG_KEY, initrd, f"{machine.host}:{machine.initrd_port}")
    if system is not None:
        return Sighting(Seen.WRONG_KEY, system, f"{machine.host}:{machine.ssh_port}")
    return Sighting(Seen.NOTHING)


async def wait_for_boot(
    machine: Machine,
    *,
    host_key: str,
    initrd_key: str,
    timeout: float,
    poll: float,
    want: frozenset[Seen] = frozenset({Seen.INITRD, Seen.SYSTEM}),
) -> Sighting:
    """Poll until the machine answers with a pinned key (``want``); TimeoutError otherwise.

    The last wrong key seen is kept so a timeout can say "answered with another key".
    """
    deadline = time.monotonic() + timeout
    last = Sighting(Seen.NOTHING)
    while True:
        sighting = await look(machine, host_key=host_key, initrd_key=initrd_key)
        if sighting.seen in want:
            return sighting
        if sighting.seen is not Seen.NOTHING:
            last = sighting
        if time.monotonic() >= deadline:
            raise BootTimeout(last)
        await asyncio.sleep(poll)


class BootTimeout(TimeoutError):
    def __init__(self, last: Sighting) -> None:
        self.last = last
        super().__init__(last.seen.value)
