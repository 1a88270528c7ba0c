"""The unlocker: one session per machine at a time, what outlives a session, and which
initrd's way of asking a session follows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time

from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.core.poll import PollTimeout, poll_until
from bot.flows.basics import Basics
from bot.flows.unlock.askpass import prompted_askpass
from bot.flows.unlock.initrd_reboot import InitrdReboots
from bot.flows.unlock.memory import Memory
from bot.flows.unlock.session import Tools, UnlockSession
from bot.flows.unlock.systemd import prompted_systemd
from bot.flows.unlock.texts import UnlockResult, initrd_mismatch
from bot.remote.place import Location, Place
from bot.remote.target import Target
from store.health import UNLOCK_EVENT, HealthStore
from store.remembered import SystemdTries

log = logging.getLogger(__name__)


class Unlocker:
    """One unlock session per machine at a time; callers share the running one."""

    def __init__(self, basics: Basics) -> None:
        self.fleet = basics.fleet
        self.store = basics.store
        self.memory = Memory(SystemdTries(basics.store))
        self.tools = Tools.of(basics)
        self.reboots = InitrdReboots(basics, follow=self.follow_boot)
        self._sessions: dict[str, asyncio.Task[UnlockResult]] = {}

    def active(self, machine: str) -> bool:
        return machine in self._sessions

    async def tries_used(self, machine: str, boot: str) -> int:
        """systemd initrd: tries the bot spent on ``machine`` during boot ``boot``."""
        return await self.memory.tries.used_this_boot(machine, boot)

    async def unlock(
        self,
        machine: Machine,
        *,
        trigger: str,
        ask: list[int] | None = None,
        seen: Location | None = None,
    ) -> UnlockResult:
        """Unlock ``machine`` (or join the session already running) and report the outcome.

        ``ask`` narrows who is prompted (default: its operators and the admins); ``seen`` is
        a look the caller just took, so it is not taken twice.
        """
        task = self._sessions.get(machine.name)
        if task is None:
            task = asyncio.create_task(
                self._session(machine, trigger, ask, seen), name=f"unlock-{machine.name}"
            )
            self._sessions[machine.name] = task
            task.add_done_callback(lambda _: self._sessions.pop(machine.name, None))
        return await asyncio.shield(task)

    async def follow_boot(
        self, machine: Machine, *, trigger: str, timeout: float | None = None
    ) -> UnlockResult:
        """Follow an expected reboot of a machine seen going down: look about once a second
        (``reboot_poll``) until its initrd answers (then unlock it) or its system is up."""
        target = await self.fleet.target(machine)
        limit = machine.boot_timeout if timeout is None else timeout
        try:
            seen = await poll_until(
                lambda: target.locate(timeout=target.reach.ssh_timeout),
                lambda s: s.place in (Place.SYSTEM, Place.INITRD) or initrd_mismatch(s),
                timeout=limit,
                interval=target.reach.poll,
            )
        except PollTimeout:
            text = f"{machine.name} did not come back within {format_duration(limit)}"
            return UnlockResult(False, text)
        if seen.place is Place.SYSTEM:
            await self.store.update_machine(machine.name, state=Place.SYSTEM)
            return UnlockResult(True, f"{machine.name} is up")
        return await self.unlock(machine, trigger=trigger, seen=seen)

    async def shutdown(self) -> None:
        tasks = [*self._sessions.values(), *self.reboots.pending()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _session(
        self, m: Machine, trigger: str, ask: list[int] | None, seen: Location | None
    ) -> UnlockResult:
        until = self.memory.cooldown_until.get(m.name, 0.0)
        if time.monotonic() < until:
            left = format_duration(until - time.monotonic())
            return UnlockResult(
                False, f"{m.name} is cooling down after wrong passphrases ({left} left)"
            )
        target: Target = await self.fleet.target(m)
        session = UnlockSession(target, self.tools, self.memory, self.reboots.offer)
        started = time.monotonic()
        result = await session.run(trigger, ask, seen, _prompted)
        if result.unlocked:
            # The wait the weekly report shows: from the initrd found waiting to the system up.
            waited = round(time.monotonic() - started, 3)
            try:
                await HealthStore(self.store).record_event(
                    m.name, UNLOCK_EVENT, seconds=waited, detail=trigger
                )
            except sqlite3.Error as exc:  # the machine is up all the same
                log.warning("the unlock wait of %s was not recorded: %s", m.name, exc)
        return result


async def _prompted(session: UnlockSession, people: list[int]) -> UnlockResult:
    """Ask the way this machine's initrd asks: per disk (systemd) or one prompt (askpass)."""
    if await session.initrd_flavour() == "systemd":
        return await prompted_systemd(session, people)
    return await prompted_askpass(session, people)
