"""Which machine a target really is, before anything erases it.

The gate authorises ``/deploy web`` by the name ``web``; the disk erased is whatever
answers at ``web``'s host. Two things tie the two together (SECURITY.md, "Erasing the
right machine"):

- the host is resolved once, and an address (and port) that belongs to another machine of
  the inventory is refused; the job then connects to that address only;
- a presented host key that is pinned for another machine (its system, initrd or
  installer key, recorded or from the inventory) is refused: it is that machine, whatever
  the address says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from bot.config.inventory import Machine
from bot.remote.address import ResolveError, resolve
from bot.remote.pins import resolve as resolve_pins
from bot.remote.place import same_key
from store import MachineState, Store


class NotThisMachine(Exception):
    """The target is (or may be) another machine; the text names both."""


def _ports(machine: Machine) -> set[int]:
    return {machine.ssh_port, machine.initrd_port} if machine.luks else {machine.ssh_port}


async def address_of(machine: Machine, others: Iterable[Machine]) -> str:
    """The one address to use for ``machine``; NotThisMachine when another machine has it.

    Other machines whose names do not resolve now cannot be compared and are skipped: the
    key check below still stands between the bot and their disks.
    """
    try:
        addresses = await resolve(machine.host, machine.ssh_port)
    except ResolveError as exc:
        raise NotThisMachine(str(exc)) from None
    rest = [m for m in others if m.name != machine.name]
    looked = await asyncio.gather(
        *(resolve(m.host, m.ssh_port) for m in rest), return_exceptions=True
    )
    for other, found in zip(rest, looked, strict=True):
        if isinstance(found, BaseException):
            if isinstance(found, ResolveError):
                continue
            raise found
        shared = [a for a in addresses if a in found]
        if shared and machine.ssh_port in _ports(other):
            raise NotThisMachine(
                f"{machine.host}:{machine.ssh_port} is {shared[0]}:{machine.ssh_port}, the "
                f"address of machine {other.name}: refusing to touch {other.name} as "
                f"{machine.name}. Nothing was changed on either machine."
            )
    return addresses[0]


async def key_owner(
    presented: str, machine: Machine, others: Iterable[Machine], store: Store
) -> tuple[str, str] | None:
    """The other machine whose pinned key ``presented`` is, and which key, or None."""
    known = await store.machines()
    for other in others:
        if other.name == machine.name:
            continue
        pins = resolve_pins(other, known.get(other.name, MachineState(name=other.name)))
        for kind, key in (
            ("system", pins.system),
            ("initrd", pins.initrd),
            ("installer", pins.installer),
        ):
            if key and same_key(presented, key):
                return other.name, kind
    return None
