"""Who may do what: admins everything, operators their own machines, strangers nothing."""

from __future__ import annotations

from bot.chat.commands import CommandSpec, Right
from bot.config.current import Current
from bot.config.inventory import Inventory, Machine


class Access:
    """The access policy, from DEPLOYBOT_ADMINS and the inventory's ``operators``.

    Both are read from :class:`~bot.config.current.Current` at each decision, so a reload
    changes who may do what at once.
    """

    def __init__(self, current: Current) -> None:
        self.current = current

    @property
    def admins(self) -> frozenset[int]:
        return self.current.admins

    @property
    def inventory(self) -> Inventory:
        return self.current.inventory

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admins

    def is_known(self, user_id: int) -> bool:
        """Admins and operators of at least one machine may talk to the bot at all."""
        return self.is_admin(user_id) or bool(self.inventory.operated_by(user_id))

    def may_act(self, user_id: int, machine: str) -> bool:
        if self.is_admin(user_id):
            return machine in self.inventory.machines
        found = self.inventory.get(machine)
        return found is not None and user_id in found.operators

    def machines_for(self, user_id: int) -> list[Machine]:
        if self.is_admin(user_id):
            return list(self.inventory)
        return self.inventory.operated_by(user_id)

    def may_run(self, user_id: int, spec: CommandSpec) -> bool:
        """Whether the command is open to the user at all (machine rights are checked apart)."""
        if spec.right is Right.ADMIN:
            return self.is_admin(user_id)
        return self.is_known(user_id)

    def people_for(self, machine: Machine) -> list[int]:
        """Everyone who may act on ``machine``: its operators, then the admins."""
        people = sorted(machine.operators)
        people += sorted(a for a in self.admins if a not in machine.operators)
        return people
