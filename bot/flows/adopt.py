"""``/adopt``: pin the system key of a machine installed without the bot, when a person
confirms the fingerprint it presents; then read its initrd key over that pinned login.

This is the one place besides a fresh install where the bot trusts a key on first use, so
the person is shown the fingerprint together with the command that prints it on the
machine, and nothing is pinned unless they press confirm. A machine that already has a pin
keeps it; one that presents another key than a pin the bot recorded (reinstalled by hand)
is offered a re-pin, showing old and new fingerprints. Keys from the inventory or sops are
the operator's: the bot never replaces them. Every decision is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.config.inventory import Inventory, Machine
from bot.core.durations import format_duration
from bot.core.keys import fingerprint
from bot.flows.basics import Basics
from bot.remote.fleet import Fleet
from bot.remote.pins import ADOPTED, RECORDED, adopted_source
from bot.remote.place import Pins, same_key
from bot.remote.ssh import SshError, fetch_host_key
from bot.remote.target import KeyReadFailed

log = logging.getLogger(__name__)
COMPARE = "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"
#: Records one decision of the flow: (decision, detail).
Audit = Callable[[str, str], Awaitable[None]]


class Adopter:
    """Runs /adopt, one person's confirmation at a time per machine."""

    def __init__(self, basics: Basics) -> None:
        self.fleet, self.store = basics.fleet, basics.store
        self.chat, self.asker = basics.chat, basics.asker
        self.tuning = basics.tuning
        self._active: set[str] = set()

    async def adopt(self, machine: Machine, *, user_id: int, by: str, chat_id: int) -> None:
        """Run /adopt for ``machine``; a second one while the first waits is turned away."""
        if machine.name in self._active:
            await self.chat.post(
                chat_id, f"An /adopt of {machine.name} is already waiting for a confirmation."
            )
            return
        self._active.add(machine.name)
        try:
            await self._adopt(machine, user_id=user_id, by=by, chat_id=chat_id)
        finally:
            self._active.discard(machine.name)

    async def _adopt(self, machine: Machine, *, user_id: int, by: str, chat_id: int) -> None:
        name = machine.name

        async def audit(decision: str, detail: str = "") -> None:
            await self.store.audit(
                user_id=user_id,
                username=by.lstrip("@"),
                action="adopt",
                machine=name,
                decision=decision,
                detail=detail,
            )

        async def say(text: str) -> None:
            await self.chat.post(chat_id, text)

        pins = await self.fleet.pins(machine)
        if pins.conflicts:
            await audit("refused", "keys contradict")
            await say(
                f"⚠️ {name}'s keys contradict each other:\n"
                + "\n".join(f"• {c}" for c in pins.conflicts)
                + "\nNothing changed: correct the inventory or sops (deploybot check shows them)."
            )
            return
        try:
            presented = await fetch_host_key(
                machine.host, machine.ssh_port, timeout=self.tuning.ssh_timeout
            )
        except SshError as exc:
            await audit("failed", f"unreachable: {exc}"[:300])
            await say(f"❌ Cannot reach {machine.host}:{machine.ssh_port}: {exc}")
            return
        new = fingerprint(presented)
        if pins.system and same_key(presented, pins.system):
            await audit("already pinned", f"{new} ({pins.system_source})")
            lines = [
                f"{name} already has a pinned system key, and presents it: "
                f"{new} ({pins.system_source}). Nothing changed."
            ]
            if machine.luks and not pins.initrd:
                lines.append(await self._initrd_line(machine))
            await say("\n".join(lines))
            return
        if pins.system and not await self._replaceable(machine, pins):
            await audit("refused", f"presents {new}, pinned {fingerprint(pins.system)}")
            await say(
                f"🚨 {name} presents {new}, but its pinned system key is "
                f"{fingerprint(pins.system)} ({pins.system_source}). I do not replace a key "
                "from the inventory or sops: if you reinstalled it, update that key there."
            )
            return
        if await self._confirmed(machine, pins, presented, user_id=user_id, chat_id=chat_id):
            await self._pin(machine, pins, presented, by=by, chat_id=chat_id, audit=audit)
        else:
            await audit("not confirmed", new)

    async def _replaceable(self, machine: Machine, pins: Pins) -> bool:
        """Only a key the bot recorded itself may be re-pinned, and only while neither the
        inventory nor sops names one (they would contradict the new pin)."""
        stored = pins.system_source == RECORDED or pins.system_source.startswith(ADOPTED)
        sops_key, _ = await self.fleet.sops_keys.public_key(machine)
        return stored and not machine.host_key and not sops_key

    async def _confirmed(
        self, machine: Machine, pins: Pins, presented: str, *, user_id: int, chat_id: int
    ) -> bool:
        name, new = machine.name, fingerprint(presented)
        within = format_duration(self.tuning.confirm_timeout)
        compare = (
            f"On the machine (its console, or a session you already trust) run:\n{COMPARE}\n"
            "and pin only if it prints the same fingerprint."
        )
        if pins.system:
            text = (
                f"⚠️ {name} presents another system key than the one pinned.\n"
                f"old: {fingerprint(pins.system)} ({pins.system_source})\n"
                f"new: {new}\n"
                f"Re-pin only if you reinstalled it by hand. {compare} Otherwise someone may "
                "be impersonating it: do not confirm.\n"
                "Its initrd key is read again from the booted system.\n\n"
                f"Confirm within {within}."
            )
            yes = "Re-pin the new key"
        else:
            text = (
                f"{name} ({machine.host}:{machine.ssh_port}) presents the system key\n{new}\n"
                f"No key for it is pinned anywhere yet. {compare}\n\nConfirm within {within}."
            )
            yes = "Pin this key"
        answer = await self.asker.confirm(
            chat_id, user_id, text, yes=yes, timeout=self.tuning.confirm_timeout
        )
        if not answer.yes:
            await self.chat.post(chat_id, f"/adopt {name} {answer.value}: nothing was pinned.")
        return answer.yes

    async def _pin(
        self, machine: Machine, pins: Pins, presented: str, *, by: str, chat_id: int, audit: Audit
    ) -> None:
        name, new = machine.name, fingerprint(presented)
        # The confirmation may have waited for minutes: pin only the key just confirmed.
        try:
            again = await fetch_host_key(
                machine.host, machine.ssh_port, timeout=self.tuning.ssh_timeout
            )
        except SshError as exc:
            await audit("failed", f"unreachable after the confirmation: {exc}"[:300])
            await self.chat.post(chat_id, f"❌ {name} stopped answering: nothing was pinned.")
            return
        if not same_key(again, presented):
            await audit("refused", f"key changed after the confirmation: {fingerprint(again)}")
            await self.chat.post(
                chat_id,
                f"🚨 {name} now presents {fingerprint(again)}, not the {new} you confirmed: "
                "nothing was pinned.",
            )
            return
        old = fingerprint(pins.system) if pins.system else ""
        await self.fleet.pin(machine, system=presented, source=adopted_source(by))
        if old:
            # Reinstalled by hand: what the bot recorded of the old install is stale.
            await self.fleet.pin(machine, initrd="")
            await self.store.update_machine(name, installed_at="", boot_id="")
        await audit("re-pinned" if old else "pinned", f"{new}" + (f" (was {old})" if old else ""))
        lines = [f"📌 {name}: system key {new} pinned ({adopted_source(by)})."]
        if machine.luks:
            lines.append(await self._initrd_line(machine))
        await self.chat.post(chat_id, "\n".join(lines))

    async def _initrd_line(self, machine: Machine) -> str:
        path = machine.initrd_host_key_file
        try:
            key = await self.fleet.learn_initrd_key(machine, force=True)
        except KeyReadFailed as exc:
            return f"⚠️ initrd key not read from the booted system: {exc}"
        if not key:
            pins = await self.fleet.pins(machine)
            if pins.initrd:
                return f"initrd key {fingerprint(pins.initrd)} ({pins.initrd_source})."
            return "⚠️ no initrd key pinned: set initrd_host_key in the inventory."
        return f"🔑 initrd key {fingerprint(key)} read from the booted system ({path})."


async def contradictions(fleet: Fleet, inventory: Inventory) -> list[tuple[str, str]]:
    """Every (machine, contradiction) among the sources of the machines' keys."""
    found = []
    for machine in inventory:
        try:
            pins = await fleet.pins(machine)
        except Exception:
            log.exception("could not resolve the keys of %s", machine.name)
            continue
        found += [(machine.name, c) for c in pins.conflicts]
    return found
