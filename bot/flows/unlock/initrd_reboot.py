"""A reboot from the initrd, offered when a systemd initrd has given up: only a new boot
brings new tries.

The person presses a button (their own, expiring); the bot reboots the machine through
its pinned initrd login (``Target.reboot(initrd=True)``), waits until that boot is over,
and follows the next one into the unlock again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from bot.core.poll import PollTimeout, poll_until
from bot.flows.basics import Basics
from bot.flows.unlock.texts import UnlockResult
from bot.remote.target import RebootFailed, Target

Follow = Callable[..., Awaitable[UnlockResult]]


class InitrdReboots:
    """Offers of a reboot from an initrd that gave up; at most one pending per machine."""

    def __init__(self, basics: Basics, *, follow: Follow) -> None:
        self.asker = basics.asker
        self.chat = basics.chat
        self.store = basics.store
        self.tuning = basics.tuning
        self.follow = follow
        self._offers: dict[str, asyncio.Task[None]] = {}

    def pending(self) -> list[asyncio.Task[None]]:
        return list(self._offers.values())

    def offer(self, target: Target, people: list[int]) -> None:
        """Offer each of ``people`` a button that reboots the machine from its initrd."""
        name = target.name
        if not people or name in self._offers:
            return
        task = asyncio.create_task(self._offer(target, people), name=f"reboot-offer-{name}")
        self._offers[name] = task
        task.add_done_callback(lambda _: self._offers.pop(name, None))

    async def _offer(self, target: Target, people: list[int]) -> None:
        m = target.machine
        pressed = await self.asker.confirm_any(
            people,
            f"🔁 Reboot {m.name} now, through its initrd login, to get new tries?",
            yes=f"Reboot {m.name} now",
            timeout=self.tuning.confirm_timeout,
        )
        if pressed is None:
            return
        await self.store.audit(
            user_id=pressed,
            username="",
            action="reboot",
            machine=m.name,
            decision="confirmed",
            detail="from the initrd after it gave up",
        )
        try:
            old = await target.reboot(initrd=True)
        except RebootFailed as exc:
            await self.chat.post(pressed, f"❌ could not reboot {m.name}: {exc}")
            return
        await self.chat.post(
            pressed, f"🔁 {m.name} is rebooting; I will ask for its passphrase when it is back."
        )
        await self._until_gone(target, old)
        await self.follow(m, trigger="reboot after the initrd gave up")

    async def _until_gone(self, target: Target, old: str) -> None:
        """Wait (bounded) until the initrd no longer answers with the old boot id, so the
        boot that follows is the new one."""

        async def gone() -> bool:
            return await target.boot_id(initrd=True) != old

        with contextlib.suppress(PollTimeout):
            await poll_until(
                gone, bool, timeout=self.tuning.reboot_down_timeout, interval=target.reach.poll
            )
