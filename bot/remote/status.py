"""A quick look at a machine: what the bot last knew, plus TCP probes of its SSH ports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.config.inventory import Machine
from bot.remote.ssh import probe_tcp
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
    machine: Machine, store: Store, timeout: float = PROBE_TIMEOUT, probe: bool = True
) -> QuickStatus:
    """Probe port 22 (and the initrd port of LUKS machines) concurrently, within ``timeout``."""
    if not probe:
        return QuickStatus(machine, await store.machine(machine.name), False, None, probed=False)
    known_task = asyncio.ensure_future(store.machine(machine.name))
    ssh = probe_tcp(machine.host, machine.ssh_port, timeout=timeout)
    if machine.luks:
        ssh_open, initrd_open = await asyncio.gather(
            ssh, probe_tcp(machine.host, machine.initrd_port, timeout=timeout)
        )
        return QuickStatus(machine, await known_task, ssh_open, initrd_open)
    return QuickStatus(machine, await known_task, await ssh, None)
