"""The machines of the inventory as Targets, each judged by the keys pinned for it.

Pins come from what the bot recorded when it installed the machine, else from the
inventory; a new pin is written to the store, where the next Target reads it.
"""

from __future__ import annotations

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
    """Builds a machine's Target with its current pins."""

    def __init__(self, store: Store, reach: Reach) -> None:
        self.store = store
        self.reach = reach

    async def target(self, machine: Machine) -> Target:
        return Target(machine, await self.pins(machine), self.reach)

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
