"""A quick look at a machine: what the bot last knew, plus TCP probes of its SSH ports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.config.inventory import Machine
from bot.remote.target import Target
from store import MachineState, Store

PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class QuickStatus:
    machine: Machine
    known: MachineState
    ssh_open: bool
    initrd_open: bool | None  # None: not a LUKS machine
    probed: bool = True


async def quick_status(
    target: Target, store: Store, timeout: float = PROBE_TIMEOUT, probe: bool = True
) -> QuickStatus:
    """The known state, and (``probe``) the ports probed together within ``timeout``."""
    machine = target.machine
    if not probe:
        return QuickStatus(machine, await store.machine(machine.name), False, None, probed=False)
    known, (ssh_open, initrd_open) = await asyncio.gather(
        store.machine(machine.name), target.ports_open(timeout=timeout)
    )
    return QuickStatus(machine, known, ssh_open, initrd_open)
