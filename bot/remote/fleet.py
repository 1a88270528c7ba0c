"""The machines of the inventory as Targets, each judged by the keys pinned for it.

Pins come from what the bot recorded when it installed the machine, else from the
inventory; a new pin is written to the store, where the next Target reads it.

The Fleet keeps one Target per machine, so the login it keeps open to the machine's system
(``bot.remote.target``) lasts from one probe to the next; its pins are read again from the
store on every ``target()``. Targets of machines that left the inventory are closed and
forgotten (``retain``), and every one is closed when the bot stops (``close``).
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.config.inventory import Machine
from bot.remote.place import Pins
from bot.remote.target import Reach, Target
from store import MachineState, Store

RECORDED = "recorded at deploy"
INVENTORY_INITRD = "initrd_host_key in the inventory"


def pins_of(machine: Machine, known: MachineState) -> Pins:
    """The pins of ``machine``: recorded first, then the inventory."""
    if known.initrd_host_key:
        initrd, source = known.initrd_host_key, RECORDED
    else:
        initrd, source = (
            machine.initrd_host_key,
            INVENTORY_INITRD if machine.initrd_host_key else "",
        )
    return Pins(
        system=known.host_key,
        initrd=initrd,
        installer=known.installer_host_key,
        initrd_source=source,
    )


class Fleet:
    """One Target per machine, judged by its current pins."""

    def __init__(self, store: Store, reach: Reach) -> None:
        self.store = store
        self.reach = reach
        self._targets: dict[str, Target] = {}

    async def target(self, machine: Machine, known: MachineState | None = None) -> Target:
        """The machine's Target with the pins the store holds now (``known``, when the
        caller has just read the machine's row)."""
        pins = pins_of(machine, known) if known is not None else await self.pins(machine)
        target = self._targets.get(machine.name)
        if target is not None and target.machine != machine:  # its inventory entry changed
            target.close()
            target = None
        if target is None:
            target = Target(machine, pins, self.reach, keep=True)
            self._targets[machine.name] = target
        else:
            target.repin(pins)
        return target

    def retain(self, names: Iterable[str]) -> None:
        """Close and forget the Targets of machines not in ``names`` (they left the
        inventory)."""
        keep = set(names)
        for name in [n for n in self._targets if n not in keep]:
            self._targets.pop(name).close()

    def close(self) -> None:
        """Close every kept login (the bot stops)."""
        for target in self._targets.values():
            target.close()
        self._targets.clear()

    @property
    def open_logins(self) -> int:
        return sum(1 for t in self._targets.values() if t.connected)

    async def pins(self, machine: Machine) -> Pins:
        return pins_of(machine, await self.store.machine(machine.name))

    async def pin(
        self,
        machine: Machine,
        *,
        system: str | None = None,
        initrd: str | None = None,
        installer: str | None = None,
    ) -> None:
        """Record new pins (only those given)."""
        fields = {
            name: value
            for name, value in (
                ("host_key", system),
                ("initrd_host_key", initrd),
                ("installer_host_key", installer),
            )
            if value is not None
        }
        if fields:
            await self.store.update_machine(machine.name, **fields)
