"""The reboot test: prove a machine survives a reboot, stage by stage, with each stage timed.

reboot → down (the old boot is gone) → initrd (LUKS: its pinned initrd key, a new boot
id) → unlock (prompt or auto-unlock, through the unlocker) → boot (the pinned system key
and a boot id other than before: a closed port alone proves nothing) → health. The
machine's probes are silenced meanwhile; a stage that does not finish in time ends the
test as stalled at that stage. One report goes to the chat that asked, or to the
machine's people for a scheduled test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.core.poll import PollTimeout, poll_until
from bot.flows.basics import Basics
from bot.flows.unlock import Unlocker
from bot.flows.watch.watcher import Watcher
from bot.jobs.context import JobContext, JobFailed, Outcome
from bot.remote.health import Probe
from bot.remote.place import Place
from bot.remote.target import RebootFailed, Target
from store import Job

REBOOT, DOWN, INITRD, UNLOCK, BOOT, HEALTH = "reboot", "down", "initrd", "unlock", "boot", "health"
PHASES = (REBOOT, DOWN, INITRD, UNLOCK, BOOT, HEALTH)
KIND = "reboot-test"


class Stalled(Exception):
    """A stage did not finish in time (or failed); the test stops there."""

    def __init__(self, stage: str, reason: str) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__(reason)


@dataclass
class Timeline:
    """When each stage ended, relative to the previous one."""

    started: float = field(default_factory=time.monotonic)
    mark: float = field(default_factory=time.monotonic)
    stages: dict[str, float] = field(default_factory=dict)

    def done(self, stage: str) -> None:
        now = time.monotonic()
        self.stages[stage] = round(now - self.mark, 3)
        self.mark = now

    def line(self) -> str:
        return " · ".join(f"{s} {format_duration(t)}" for s, t in self.stages.items())

    @property
    def total(self) -> float:
        return time.monotonic() - self.started


class RebootTester:
    """Runs reboot tests as jobs; one per machine at a time (the job runner enforces it)."""

    def __init__(
        self,
        basics: Basics,
        *,
        unlocker: Unlocker,
        watcher: Watcher,
    ) -> None:
        self.jobs, self.fleet, self.store = basics.jobs, basics.fleet, basics.store
        self.chat, self.access, self.health = basics.chat, basics.access, basics.health
        self.tuning = basics.tuning
        self.unlocker = unlocker
        self.watcher = watcher

    async def start(
        self, machine: Machine, *, trigger: str, user_id: int | None, chat_id: int | None
    ) -> Job:
        """Start the test as a job (JobConflict if the machine is busy)."""
        phases = PHASES if machine.luks else tuple(p for p in PHASES if p not in (INITRD, UNLOCK))

        return await self.jobs.start(
            kind=KIND,
            title=f"Reboot test {machine.name}",
            machine=machine.name,
            user_id=user_id,
            chat_id=chat_id,
            phases=phases,
            work=partial(self._run, machine=machine, trigger=trigger, chat_id=chat_id),
        )

    async def _run(
        self, ctx: JobContext, machine: Machine, *, trigger: str, chat_id: int | None
    ) -> Outcome:
        test_id = await self.health.start_reboot_test(
            machine.name, job_id=ctx.job.id, trigger=trigger
        )
        timeline = Timeline()
        people = [chat_id] if chat_id is not None else self.access.people_for(machine)
        with self.watcher.silence(machine.name):
            try:
                summary = await self._stages(ctx, machine, timeline, trigger)
            except Stalled as exc:
                took = format_duration(timeline.total)
                text = (
                    f"❌ Reboot test of {machine.name} stalled at {exc.stage} after {took}: "
                    f"{exc.reason}\n{timeline.line() or 'no stage finished'}"
                )
                await self.health.finish_reboot_test(
                    test_id, ok=False, stage=exc.stage, stages=timeline.stages, summary=exc.reason
                )
                await self._report(people, text)
                raise JobFailed(f"stalled at {exc.stage}: {exc.reason}", phase=exc.stage) from None
            except BaseException:
                await asyncio.shield(
                    self.health.finish_reboot_test(
                        test_id,
                        ok=False,
                        stage=ctx.phase or "",
                        stages=timeline.stages,
                        summary="stopped",
                    )
                )
                raise
        took = format_duration(timeline.total)
        await self.health.finish_reboot_test(
            test_id, ok=True, stage="", stages=timeline.stages, summary=summary
        )
        await self._report(
            people,
            f"✅ Reboot test of {machine.name} passed in {took} ({trigger}).\n"
            f"{timeline.line()}\n{summary}",
        )
        return Outcome(f"passed: {timeline.line()}; {summary}")

    async def _stages(
        self, ctx: JobContext, machine: Machine, timeline: Timeline, trigger: str
    ) -> str:
        target = await self.fleet.target(machine)
        if not target.pins.system:
            raise Stalled(REBOOT, "no pinned host key: install it with the bot first")
        if machine.luks and not target.pins.initrd:
            raise Stalled(REBOOT, "no pinned initrd host key")

        await ctx.enter(REBOOT)
        try:
            old = await target.reboot()
        except RebootFailed as exc:
            raise Stalled(REBOOT, str(exc)) from None
        ctx.output(f"boot id before: {old}")
        timeline.done(REBOOT)

        await ctx.enter(DOWN)
        seen = await self._until(
            target,
            DOWN,
            self.tuning.reboot_down_timeout,
            lambda: self._gone(target, old),
            f"it still answers with boot id {old[:8]}",
        )
        ctx.output(f"down: {seen}")
        timeline.done(DOWN)

        if machine.luks:
            await ctx.enter(INITRD)
            new = await self._until(
                target,
                INITRD,
                machine.boot_timeout,
                lambda: target.boot_id(initrd=True),
                "its initrd did not answer with its pinned key",
            )
            if new == old:
                raise Stalled(INITRD, "the initrd reports the old boot id")
            ctx.output(f"initrd up, boot id {new}")
            timeline.done(INITRD)
            await ctx.enter(UNLOCK)
            result = await self.unlocker.unlock(machine, trigger=f"reboot test ({trigger})")
            if not result.ok:
                raise Stalled(UNLOCK, result.summary)
            ctx.output(result.summary)
            timeline.done(UNLOCK)

        await ctx.enter(BOOT)
        new = await self._until(
            target,
            BOOT,
            machine.boot_timeout,
            target.boot_id,
            "the system did not answer with its pinned key",
        )
        if new == old:
            raise Stalled(BOOT, f"it answers with the old boot id {old[:8]}: it did not reboot")
        ctx.output(f"booted, boot id {new}")
        timeline.done(BOOT)

        await ctx.enter(HEALTH)
        probe = await self._settled(target)
        if probe.health is None:
            raise Stalled(HEALTH, probe.problem)
        await self.store.update_machine(machine.name, boot_id=probe.health.boot_id)
        timeline.done(HEALTH)
        if not probe.ok:
            raise Stalled(HEALTH, "; ".join(probe.health.problems()))
        return f"boot id {old[:8]} → {new[:8]}; {probe.health.summary()}"

    async def _settled(self, target: Target) -> Probe:
        """The health check once systemd has finished the boot (its SSH answers while units
        still start: a real guest said "starting" for longer than a minute), or the last
        look after ``boot_timeout``, which judges a boot still not over."""
        machine = target.machine

        def over(probe: Probe) -> bool:
            return probe.health is None or not probe.health.booting

        try:
            return await poll_until(
                partial(self.watcher.check_now, machine),
                over,
                timeout=machine.boot_timeout,
                interval=target.reach.poll,
            )
        except PollTimeout as exc:
            last: Probe = exc.last
            return last

    @staticmethod
    async def _gone(target: Target, old: str) -> str:
        """Why the old boot is over ("" while it still runs)."""
        new = await target.boot_id()
        if new and new != old:
            return f"back already with boot id {new[:8]}"
        if new:
            return ""
        if target.machine.luks and (await target.locate()).place is Place.INITRD:
            return "its initrd answers"
        return "nothing answers"

    @staticmethod
    async def _until(
        target: Target, stage: str, timeout: float, look: Callable[[], Awaitable[str]], why: str
    ) -> str:
        """Poll ``look`` until it returns text; Stalled at ``stage`` after ``timeout``."""
        try:
            return await poll_until(look, bool, timeout=timeout, interval=target.reach.poll)
        except PollTimeout:
            raise Stalled(stage, f"{why} within {format_duration(timeout)}") from None

    async def _report(self, chats: list[int], text: str) -> None:
        await asyncio.gather(*(self.chat.post(chat, text) for chat in chats))
