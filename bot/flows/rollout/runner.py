"""A rollout: one build of every system, one confirmation, a canary, then waves.

It is one job of kind ``rollout``; each machine is a job of kind ``update`` of its own
(created with the rollout, so single jobs on those machines are refused meanwhile) that runs
the Updater's steps after the build behind its own rollback guard. The first failure (a
build, a rollback, a failed health check) stops it: no machine starts after it, the ones
under way finish behind their guards. ``/cancel`` does the same. After a restart nothing
starts again; each machine's guard decides its own fate (docs/updates.md, "Rollouts").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from bot.chat.asker import Asker
from bot.chat.port import Button
from bot.config.current import Current
from bot.config.inventory import Machine
from bot.config.settings import Settings
from bot.config.tuning import Tuning
from bot.core.durations import format_duration
from bot.core.telegram_limits import MAX_TEXT, text_length
from bot.core.text import printable
from bot.flows.rollout.board import (
    FAILED,
    MACHINE_EVENT,
    MAX_REASON,
    REASON,
    ROLLED,
    UNCHANGED,
    UNTOUCHED,
    UPDATED,
    UPDATING,
    WAITING,
    Board,
    recorded,
)
from bot.flows.rollout.plan import RolloutPlan, read_plan
from bot.flows.rollout.review import Running, read_review, read_running, shown
from bot.flows.update.activation import ROLLED_BACK
from bot.flows.update.closure import VERDICT_ROOM
from bot.flows.update.offer import RebootOffers
from bot.flows.update.pipeline import (
    ACTIVATE,
    CONFIRM,
    COPY,
    HEALTH,
    REVIEW,
    UPDATE_KIND,
    Updater,
)
from bot.flows.update.plan import Plan
from bot.jobs.context import JobCancelled, JobContext, Outcome, require_yes
from bot.jobs.runner import JobRunner
from bot.remote import nix
from bot.remote.fleet import Fleet
from bot.remote.nix import child_env
from store import Job, Store

ROLLOUT_KIND = "rollout"
CONFIRMING, BUILD, CANARY, WAVES = "confirm", "build", "canary", "waves"
MACHINE_PHASES = (COPY, REVIEW, ACTIVATE, CONFIRM, HEALTH)
#: The callback data of the progress message's button (``rd:<job>``, within 64 bytes).
DETAIL_PREFIX = "rd"


class Rollouts:
    """Plans and starts rollouts; one instance per bot."""

    def __init__(
        self,
        *,
        jobs: JobRunner,
        updater: Updater,
        fleet: Fleet,
        store: Store,
        asker: Asker,
        settings: Settings,
        tuning: Tuning,
        current: Current,
        offers: RebootOffers,
    ) -> None:
        self.jobs = jobs
        self.updater = updater
        self.fleet = fleet
        self.store = store
        self.asker = asker
        self.settings = settings
        self.tuning = tuning
        self.current = current
        self.offers = offers
        self._live: dict[int, _Run] = {}

    async def plan(self, args: Sequence[str], *, user_id: int, admin: bool) -> RolloutPlan:
        return await read_plan(
            args,
            self.current.inventory,
            user_id=user_id,
            admin=admin,
            fleet=self.fleet,
            store=self.store,
        )

    async def start(self, plan: RolloutPlan, *, user_id: int, chat_id: int) -> Job:
        """Lock every machine of the plan and start the rollout (JobConflict when one is
        busy: then nothing is locked)."""
        names = [m.name for m in plan.machines]
        children = await self.store.create_jobs(
            kind=UPDATE_KIND, machines=names, user_id=user_id, chat_id=None
        )

        try:
            return await self.jobs.start(
                kind=ROLLOUT_KIND,
                title=f"Rollout of {plan.label}",
                machine=plan.label,
                user_id=user_id,
                chat_id=chat_id,
                phases=[BUILD, CONFIRMING, CANARY, WAVES],
                work=partial(
                    self._run, plan=plan, children=children, user_id=user_id, chat_id=chat_id
                ),
            )
        except Exception:
            for child in children:
                await self.jobs.end_unstarted(child, "cancelled", "the rollout did not start")
            raise

    # -- the job -------------------------------------------------------------------------------

    async def _run(
        self,
        ctx: JobContext,
        plan: RolloutPlan,
        children: list[Job],
        *,
        user_id: int,
        chat_id: int,
    ) -> Outcome:
        run = _Run(self, ctx, plan, children, user_id=user_id)
        self._live[ctx.job.id] = run
        ctx.progress.set_buttons([[Button("Each machine", f"{DETAIL_PREFIX}:{ctx.job.id}")]])
        try:
            return await run.go(chat_id)
        finally:
            await asyncio.shield(run.end_untouched())
            self._live.pop(ctx.job.id, None)

    async def detail(self, job_id: int) -> list[str]:
        """Each machine of a rollout: from the board while it runs here, else from what it
        recorded (a machine never started reads as not touched once it ended)."""
        run = self._live.get(job_id)
        if run is not None:
            return run.board.detail()
        return (await recorded(self.store, job_id)).detail()


class _Run:
    """One rollout under way: its board, its stop flag, its machines' jobs."""

    def __init__(
        self,
        rollouts: Rollouts,
        ctx: JobContext,
        plan: RolloutPlan,
        children: list[Job],
        *,
        user_id: int,
    ) -> None:
        self.r = rollouts
        self.ctx = ctx
        self.plan = plan
        self.child = {job.machine: job for job in children}
        self.user_id = user_id
        self.board = Board([m.name for m in plan.machines])
        self.stopped: str | None = None  # why no machine starts any more
        self.started: set[str] = set()
        self.plans: dict[str, Plan] = {}
        ctx.on_cancel = self.cancel

    def cancel(self) -> None:
        if self.stopped is None:
            self.stopped = "cancelled: no machine starts any more"
            self.ctx.progress.note(
                "🚫 cancelled: the machines under way finish behind their guards"
            )

    async def go(self, chat_id: int) -> Outcome:
        ctx, plan = self.ctx, self.plan
        self.show()
        await ctx.enter(BUILD)
        r = self.r
        reading = asyncio.ensure_future(
            read_running(plan.machines, fleet=r.fleet, timeout=r.tuning.ssh_timeout)
        )
        try:
            systems = await self.build()
            running = await reading
        finally:
            reading.cancel()
        if self.stopped:
            raise JobCancelled(f"{self.stopped}; nothing was changed")
        await ctx.enter(CONFIRMING)
        timeout = self.r.tuning.confirm_timeout
        question = plan.describe(self.r.settings.rollout_parallel)
        tail = f"\n\nConfirm within {format_duration(timeout)}."
        changes = await self.closures(systems, running, chat_id, other=question + tail)
        verdict = await self.r.asker.confirm(
            chat_id,
            self.user_id,
            f"{question}\n{changes}{tail}",
            yes=f"Update {len(plan.machines)} machines",
            timeout=timeout,
        )
        await self.r.store.audit(
            user_id=self.user_id,
            username="",
            action=ROLLOUT_KIND,
            machine="",
            decision=verdict.value,
            detail=f"job {ctx.job.id}: {plan.label} ({len(plan.machines)} machines)",
        )
        require_yes(verdict)
        if self.stopped:
            raise JobCancelled(f"{self.stopped}; nothing was changed")
        await ctx.enter(CANARY)
        await self.wave(plan.canaries, systems)
        await ctx.enter(WAVES)
        size = self.r.settings.rollout_parallel
        rest = list(plan.rest)
        for start in range(0, len(rest), size):
            if self.stopped:
                break
            await self.wave(rest[start : start + size], systems)
        for name in self.board.names(WAITING):
            self.board.state[name] = UNTOUCHED
        self.offer_reboots(chat_id)
        summary = self.board.result()
        self.ctx.progress.show_board("")
        if self.stopped and self.stopped.startswith("cancelled"):
            raise JobCancelled(f"{self.stopped}\n{summary}")
        if self.stopped:
            raise ctx.fail(f"stopped at the first failure: {self.stopped}\n{summary}")
        return Outcome(f"{len(self.plan.machines)} machines rolled out\n{summary}")

    def show(self) -> None:
        self.ctx.progress.show_board(self.board.counts())

    async def closures(
        self, systems: dict[str, str], running: dict[str, Running], chat_id: int, *, other: str
    ) -> str:
        """What the rollout changes on each machine, within the room ``other`` leaves."""
        r = self.r
        found = await read_review(
            self.plan.machines,
            systems,
            running,
            nix_command=r.settings.nix,
            build_timeout=r.tuning.nixos_anywhere_timeout,
            kill_grace=r.tuning.stop_grace,
        )
        room = MAX_TEXT - text_length(other) - VERDICT_ROOM
        text, logged = await shown(
            found, room=room, chat=r.updater.chat, chat_id=chat_id, job=self.ctx.job.id
        )
        self.ctx.output(logged)
        return text

    # -- the build -----------------------------------------------------------------------------

    async def build(self) -> dict[str, str]:
        """Every system in one ``nix build``; when it fails, each alone, to name which."""
        machines = self.plan.machines
        attrs = list(dict.fromkeys(m.flake_attr for m in machines))
        paths, last = await self._build(attrs)
        if paths is None:
            failed = []
            for attr in attrs:
                one, why = await self._build([attr])
                if one is None:
                    failed.append((attr, why))
            names = [m.name for m in machines if m.flake_attr in {a for a, _ in failed}]
            why = failed[0][1] if failed else last
            for name in names:
                self.board.state[name], self.board.why[name] = FAILED, f"its build failed: {why}"
            for name in self.board.names(WAITING):
                self.board.state[name] = UNTOUCHED
            self.stopped = f"the build failed for {', '.join(names) or 'some machine'}"
            raise self.ctx.fail(
                f"the build failed for {', '.join(names) or 'some machine'}: {why}. "
                "No machine was touched"
            )
        by_attr = dict(zip(attrs, paths, strict=True))
        return {m.name: by_attr[m.flake_attr] for m in machines}

    async def _build(self, attrs: list[str]) -> tuple[list[str] | None, str]:
        ctx, settings = self.ctx, self.r.settings
        argv = nix.build_many_argv(
            settings.nix, flake=settings.flake, attrs=attrs, output="toplevel"
        )
        ctx.output(" ".join(argv))
        try:
            done = await nix.run_nix(
                argv,
                what="nix build",
                env=child_env(),
                on_line=ctx.output,
                timeout=self.r.tuning.build_timeout,
                kill_grace=self.r.tuning.stop_grace,
            )
        except nix.NixError as exc:
            return None, str(exc)
        paths = done.store_paths()
        if done.code != 0 or len(paths) != len(attrs):
            return None, ctx.log.clean(done.last).rstrip(".") or f"exit {done.code}"
        return paths, ""

    # -- the machines --------------------------------------------------------------------------

    async def wave(self, machines: Sequence[Machine], systems: dict[str, str]) -> None:
        """Start these machines together and wait for all of them (each behind its guard)."""
        if self.stopped or not machines:
            return
        for machine in machines:
            self.board.state[machine.name] = UPDATING
            self.started.add(machine.name)
            await self.record(machine.name)
        self.show()
        await asyncio.gather(*(self.one(m, systems[m.name]) for m in machines))

    async def one(self, machine: Machine, new: str) -> None:
        name = machine.name

        async def work(ctx: JobContext) -> Outcome:
            outcome, plan = await self.r.updater.update_built(
                ctx, machine, new, user_id=self.user_id
            )
            self.plans[name] = plan
            return outcome

        state, result = await self.r.jobs.run_child(
            self.child[name], title=f"Update {name}", phases=MACHINE_PHASES, work=work
        )
        plan = self.plans.get(name)
        if state == "succeeded":
            self.board.state[name] = UNCHANGED if plan is not None and plan.unchanged else UPDATED
        else:
            rolled = ROLLED_BACK in result
            self.board.state[name] = ROLLED if rolled else FAILED
            self.board.why[name] = result
            if self.stopped is None or self.stopped.startswith("cancelled"):
                self.stopped = f"{name} {'rolled back' if rolled else 'failed'}"
        await self.record(name)
        self.show()

    async def record(self, name: str) -> None:
        """The machine's state as a job event: what a restart and the detail report."""
        why = printable(self.board.why.get(name, ""), MAX_REASON)
        text = f"{name}: {self.board.state[name]}" + (f"{REASON}{why}" if why else "")
        await self.ctx.bookkeep(self.r.store.add_event(self.ctx.job.id, MACHINE_EVENT, text))

    async def end_untouched(self) -> None:
        """The machines that never started end as not touched; their locks go."""
        for name, job in self.child.items():
            if name not in self.started:
                if self.board.state.get(name) == WAITING:
                    self.board.state[name] = UNTOUCHED
                await self.record(name)
                await self.r.jobs.end_unstarted(
                    job, "cancelled", "not touched: the rollout stopped"
                )

    def offer_reboots(self, chat_id: int) -> None:
        """Machines now on a system whose kernel or initrd changed: one button for all."""
        due = [
            m
            for m in self.plan.machines
            if self.board.state[m.name] == UPDATED and self.plans[m.name].reboot_parts
        ]
        if due:
            self.r.offers.offer_many(self.ctx.job.id, due, user_id=self.user_id, chat_id=chat_id)
