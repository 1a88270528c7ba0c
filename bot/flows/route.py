"""Which job ``/deploy <machine>`` starts: an update, an install, or none yet.

Judged by what the machine presents now, never by what the store last recorded: only a
machine answering with its pinned system key is updated in place; one waiting in its
initrd is refused until it is unlocked; anything else is installed (the install job's own
checks then decide whether it may erase the disk).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from bot.config.inventory import Machine
from bot.flows.basics import Basics
from bot.remote.identity import NotThisMachine, address_of
from bot.remote.place import Place


class Route(Enum):
    UPDATE = "update"
    INSTALL = "install"
    REFUSED = "refused"


@dataclass(frozen=True)
class Decision:
    """What ``/deploy`` does with a machine, judged by what it presents now."""

    route: Route
    text: str = ""


class Router:
    """Routes ``/deploy`` of one machine; one instance per bot."""

    def __init__(self, basics: Basics) -> None:
        self.fleet, self.store, self.current = basics.fleet, basics.store, basics.current

    async def decide(self, machine: Machine, *, user_id: int, username: str) -> Decision:
        """Update a machine answering with its pinned system key; install anything else;
        refuse an initrd (it must be unlocked first). The decision is audited."""
        try:
            # Never contact an address another machine of the inventory has: the install
            # job then refuses and names both machines.
            address = await address_of(machine, self.current.inventory)
        except NotThisMachine:
            seen = None
        else:
            target = await self.fleet.target(machine)
            at = target if address == machine.host else target.at(address)
            seen = await at.locate() if target.pins.system else None
        if seen is not None and seen.place is Place.SYSTEM:
            decision = Decision(Route.UPDATE, "it answers with its pinned system key")
        elif seen is not None and seen.place is Place.INITRD:
            decision = Decision(
                Route.REFUSED,
                f"{machine.name} waits in its initrd for its disk passphrase: /unlock "
                f"{machine.name} first, then /deploy {machine.name} again to update it.",
            )
        else:
            where = seen.place.value if seen is not None else "no pinned system key"
            decision = Decision(Route.INSTALL, f"it is not the installed system ({where})")
        await self.store.audit(
            user_id=user_id,
            username=username,
            action="deploy",
            machine=machine.name,
            decision=decision.route.value,
            detail=decision.text[:200],
        )
        return decision
