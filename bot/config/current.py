"""What a reload may change, in one place: the inventory and the admins in force.

Every part that needs the machines or the admins holds this one :class:`Current` and reads
``.inventory`` / ``.admins`` each time it needs them, instead of keeping an ``Inventory``
of its own. A reload builds the new values completely, then :meth:`Current.replace` swaps
them in one assignment: on the event loop no reader can see half of a reload, and nobody
needs to reach into another object to update it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.inventory import Inventory


@dataclass(frozen=True)
class InForce:
    """The inventory and the admins, as one value."""

    inventory: Inventory
    admins: frozenset[int]


class Current:
    """The one mutable holder of what is in force; replaced whole by a reload."""

    def __init__(self, inventory: Inventory, admins: frozenset[int]) -> None:
        self._now = InForce(inventory, admins)

    @property
    def now(self) -> InForce:
        """Both values at once, for a reader that needs them to agree."""
        return self._now

    @property
    def inventory(self) -> Inventory:
        return self._now.inventory

    @property
    def admins(self) -> frozenset[int]:
        return self._now.admins

    def replace(self, inventory: Inventory, admins: frozenset[int]) -> InForce:
        """Put the new values in force; returns what was in force before."""
        before, self._now = self._now, InForce(inventory, admins)
        return before
