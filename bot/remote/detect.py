"""Is a machine waiting in its initrd? Both SSH ports, looked at together, by pinned keys."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import Enum

from bot.config.inventory import Machine
from bot.core.keys import fingerprint
from bot.remote.reboot_watch import presented_key, same_key


class Found(Enum):
    INITRD = "waiting in its initrd"
    UP = "up"
    MISMATCH = "initrd host key mismatch"
    SYSTEM = "its system SSH answers"
    NOTHING = "nothing answers"


@dataclass(frozen=True)
class Detection:
    found: Found
    presented: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Pins:
    """The keys the machine must present; ``source`` says where the initrd pin came from."""

    initrd: str
    system: str
    source: str


async def detect(m: Machine, pins: Pins, *, timeout: float) -> Detection:
    """Waiting in the initrd means: the initrd port shows the pinned initrd key, and the
    system's SSH does not answer. Both ports are looked at together."""

    same_port = m.initrd_port == m.ssh_port
    ports = [m.initrd_port] if same_port else [m.initrd_port, m.ssh_port]
    looks = await asyncio.gather(*(presented_key(m.host, p, timeout=timeout) for p in ports))
    (initrd, why), (system, _) = looks[0], looks[-1]
    if system is not None and pins.system and same_key(system, pins.system):
        return Detection(Found.UP, system)
    if initrd is None:
        return Detection(Found.NOTHING, detail=why)
    if not same_port and system is not None:
        return Detection(Found.SYSTEM, system, f"its system SSH answers ({fingerprint(system)})")
    if not same_key(initrd, pins.initrd):
        return Detection(Found.MISMATCH, initrd)
    return Detection(Found.INITRD, initrd)
