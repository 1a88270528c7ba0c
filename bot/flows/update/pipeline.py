"""Updating an installed machine, and rolling it back, behind a guard that lives on it.

build → copy → review (a person confirms what changes) → activate (the guard armed first)
→ confirm (a fresh pinned login sees the new system) → health → the guard disarmed. Nothing
on the machine changes before the activation: a failed build or copy ends the job there.
Once the guard is armed only the machine decides: a change that is not confirmed in time
is undone by the machine itself, also when the bot lost its connection or died; the bot
then waits for that and reports it (``docs/updates.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from functools import partial
from pathlib import Path

from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.flows.basics import Basics
from bot.flows.update import closure, guard
from bot.flows.update.activation import GuardWatch
from bot.flows.update.offer import RebootOffers
from bot.flows.update.plan import Plan, PlanError, read_plan
from bot.flows.watch.reboot_test import RebootTester
from bot.jobs.context import JobContext, Outcome, require_yes
from bot.remote import nix
from bot.remote.login import Login
from bot.remote.nix import child_env
from bot.remote.ssh import SshError
from bot.remote.target import Target
from store import Job

BUILD, COPY, REVIEW, ACTIVATE, CONFIRM, HEALTH = (
    "build",
    "copy",
    "review",
    "activate",
    "confirm",
    "health",
)
UPDATE_KIND, ROLLBACK_KIND = "update", "rollback"
GUARDED_KINDS = frozenset({UPDATE_KIND, ROLLBACK_KIND})
GUARD_WINDOW = (
    "the rollback guard on {machine} decides now: it switches back to generation {generation} "
    "by itself unless I confirm the new system; cancelling cannot stop that"
)


class Updater:
    """Starts update and rollback jobs; one instance per bot."""

    def __init__(self, basics: Basics, *, tester: RebootTester) -> None:
        self.current = basics.current
        self.jobs, self.fleet, self.store = basics.jobs, basics.fleet, basics.store
        self.chat, self.asker = basics.chat, basics.asker
        self.settings, self.tuning = basics.settings, basics.tuning
        self.offers = RebootOffers(
            store=basics.store,
            chat=basics.chat,
            asker=basics.asker,
            tuning=basics.tuning,
            tester=tester,
        )

    async def start(self, machine: Machine, *, user_id: int, chat_id: int) -> Job:
        """Start an update job (JobConflict when the machine is busy)."""

        return await self.jobs.start(
            kind=UPDATE_KIND,
            title=f"Update {machine.name}",
            machine=machine.name,
            user_id=user_id,
            chat_id=chat_id,
            phases=[BUILD, COPY, REVIEW, ACTIVATE, CONFIRM, HEALTH],
            work=partial(self._update, machine=machine, user_id=user_id, chat_id=chat_id),
        )

    async def start_rollback(self, machine: Machine, *, user_id: int, chat_id: int) -> Job:
        """Start a rollback to the previous generation (JobConflict when busy)."""

        return await self.jobs.start(
            kind=ROLLBACK_KIND,
            title=f"Rollback {machine.name}",
            machine=machine.name,
            user_id=user_id,
            chat_id=chat_id,
            phases=[REVIEW, ACTIVATE, CONFIRM, HEALTH],
            work=partial(self._rollback, machine=machine, user_id=user_id, chat_id=chat_id),
        )

    async def shutdown(self) -> None:
        await self.offers.shutdown()

    # -- the jobs ----------------------------------------------------------------------------

    async def _update(
        self, ctx: JobContext, machine: Machine, *, user_id: int, chat_id: int
    ) -> Outcome:
        target = await self._target(ctx, machine)
        login = target.login()
        login.start()  # while it builds and copies
        try:
            await ctx.enter(BUILD)
            new = await self._build(ctx, machine)
            outcome, _ = await self._apply(
                ctx, target, login, new, approve=True, user_id=user_id, chat_id=chat_id
            )
            return outcome
        finally:
            login.close()

    async def update_built(
        self, ctx: JobContext, machine: Machine, new: str, *, user_id: int
    ) -> tuple[Outcome, Plan]:
        """One machine of a rollout, its system built and the rollout confirmed: copy,
        review, activate behind its guard, confirm, health, as a single update; no question
        and no reboot offer of its own (the rollout makes one for all)."""
        target = await self._target(ctx, machine)
        login = target.login()
        login.start()  # while it copies
        try:
            return await self._apply(
                ctx, target, login, new, approve=False, user_id=user_id, chat_id=0
            )
        finally:
            login.close()

    async def _apply(
        self,
        ctx: JobContext,
        target: Target,
        login: Login,
        new: str,
        *,
        approve: bool,
        user_id: int,
        chat_id: int,
    ) -> tuple[Outcome, Plan]:
        """Everything after the build, the steps before the activation sharing ``login``
        (``target``'s, made while it builds); ``approve``: ask the person first."""
        machine = target.machine
        await ctx.enter(COPY)
        await self._copy(ctx, target, new)
        await ctx.enter(REVIEW)
        plan = await self._plan(ctx, target, login, new, None)
        if plan.unchanged:
            for phase in (ACTIVATE, CONFIRM, HEALTH):
                ctx.skip(phase)
            return Outcome(
                f"{machine.name} already runs {new} (generation {plan.generation})"
            ), plan
        if approve:
            await self._approve(
                ctx, machine, plan, user_id=user_id, chat_id=chat_id, yes="Update", login=login
            )
        select = guard.set_profile(new)
        outcome = await self._guarded(
            ctx, target, login, plan, select, user_id=user_id, chat_id=chat_id, offer=approve
        )
        return outcome, plan

    async def _rollback(
        self, ctx: JobContext, machine: Machine, *, user_id: int, chat_id: int
    ) -> Outcome:
        target = await self._target(ctx, machine)
        await ctx.enter(REVIEW)
        timeout = self.tuning.ssh_timeout
        login = target.login()
        try:
            try:
                shell = await login.shell()
                state = await guard.read_state(shell, timeout=timeout)
                numbers, current = state.numbers, state.current
                older = [n for n in numbers if current is not None and n < current]
                if not older:
                    raise ctx.fail(
                        f"{machine.name} has no generation older than the current one "
                        f"({current}): nothing to roll back to"
                    )
                back = max(older)
                path = await guard.readlink(shell, guard.generation_link(back), timeout=timeout)
            except SshError as exc:
                raise ctx.fail(f"cannot read {machine.name}'s generations: {exc}") from None
            if not nix.STORE_PATH.fullmatch(path):
                raise ctx.fail(f"generation {back} of {machine.name} points at no store path")
            plan = await self._plan(ctx, target, login, path, back)
            await self._approve(
                ctx, machine, plan, user_id=user_id, chat_id=chat_id, yes="Roll back"
            )
            select = guard.switch_generation(back)
            return await self._guarded(
                ctx, target, login, plan, select, user_id=user_id, chat_id=chat_id
            )
        finally:
            login.close()

    async def _target(self, ctx: JobContext, machine: Machine) -> Target:
        target = await self.fleet.target(machine)
        if not target.pins.system:
            raise ctx.fail(f"{machine.name} has no pinned host key: install it with /deploy")
        return target

    # -- build and copy (nothing on the machine changes) -------------------------------------

    async def _build(self, ctx: JobContext, machine: Machine) -> str:
        settings = self.settings
        argv = nix.build_argv(
            settings.nix, flake=settings.flake, attr=machine.flake_attr, outputs=("toplevel",)
        )
        done = await self._nix(ctx, argv, env=child_env(), what="build")
        paths = done.store_paths()
        path = paths[-1] if paths else None
        if done.code != 0 or path is None:
            last = ctx.log.clean(done.last).rstrip(".") or f"exit {done.code}"
            raise ctx.fail(f"the build failed: {last}. Nothing changed on {machine.name}")
        ctx.output(f"built {path}")
        return path

    async def _copy(self, ctx: JobContext, target: Target, path: str) -> None:
        machine = target.machine
        folder = self.settings.state_dir / "updates" / f"job-{ctx.job.id}"
        known = folder / "known_hosts"
        try:
            await asyncio.to_thread(
                nix.write_known_hosts, known, machine.host, machine.ssh_port, target.pins.system
            )
            env = child_env()
            env["NIX_SSHOPTS"] = nix.ssh_options(
                known_hosts=known.resolve(),
                client_key=self.settings.ssh_key.resolve(),
                port=machine.ssh_port,
            )
            argv = nix.copy_argv(
                self.settings.nix, user=machine.ssh_user, host=machine.host, path=path
            )
            done = await self._nix(ctx, argv, env=env, what="copy")
        except (nix.NixError, ValueError, OSError) as exc:
            raise ctx.fail(f"cannot copy: {exc}. Nothing changed on {machine.name}") from None
        finally:
            await asyncio.to_thread(_remove, known)
        if done.code != 0:
            last = ctx.log.clean(done.last).rstrip(".") or f"exit {done.code}"
            raise ctx.fail(f"the copy failed: {last}. Nothing changed on {machine.name}")

    async def _nix(
        self, ctx: JobContext, argv: list[str], *, env: dict[str, str], what: str
    ) -> nix.Finished:
        ctx.output(" ".join(argv))
        try:
            return await nix.run_nix(
                argv,
                what=f"nix {what}",
                env=env,
                on_line=ctx.output,
                timeout=self.tuning.nixos_anywhere_timeout,
                kill_grace=self.tuning.stop_grace,
            )
        except nix.NixError as exc:
            raise ctx.fail(f"the {what} did not run: {exc}. Nothing changed") from None

    # -- review -------------------------------------------------------------------------------

    async def _plan(
        self, ctx: JobContext, target: Target, login: Login, new: str, back: int | None
    ) -> Plan:
        timeout, name = self.tuning.ssh_timeout, target.name
        try:
            shell = await login.shell()
            plan = await read_plan(shell, name, new, timeout=timeout, to_generation=back)
            before = await target.health_in(shell)
        except SshError as exc:
            raise ctx.fail(f"cannot read {name}'s system: {exc}") from None
        except PlanError as exc:
            raise ctx.fail(str(exc)) from None
        plan = dataclasses.replace(plan, health=before)
        known = before.problems()
        if known:
            ctx.output(f"already before the change: {'; '.join(known)}")
        ctx.output(f"now generation {plan.generation}: {plan.current}")
        ctx.output(f"reboot needed for: {', '.join(plan.reboot_parts) or 'nothing'}")
        return plan

    async def _approve(
        self,
        ctx: JobContext,
        machine: Machine,
        plan: Plan,
        *,
        user_id: int,
        chat_id: int,
        yes: str,
        login: Login | None = None,
    ) -> None:
        timeout = self.tuning.confirm_timeout
        rollback = ctx.job.kind == ROLLBACK_KIND
        text = plan.describe(rollback_timeout=machine.rollback_timeout, rollback=rollback)
        tail = f"\n\nConfirm within {format_duration(timeout)}."
        if login is not None:  # an update: what its closure changes (docs/updates.md)
            changes = await self._closure(ctx, login, plan, chat_id, other=text + tail)
            text = f"{text}\n{changes}"
        verdict = await self.asker.confirm(
            chat_id,
            user_id,
            f"{text}{tail}",
            yes=f"{yes} {machine.name}",
            timeout=timeout,
        )
        await self.store.audit(
            user_id=user_id,
            username="",
            action=ctx.job.kind,
            machine=machine.name,
            decision=verdict.value,
            detail=f"job {ctx.job.id}: generation {plan.generation} → {plan.new}",
        )
        require_yes(verdict)

    async def _closure(
        self, ctx: JobContext, login: Login, plan: Plan, chat_id: int, *, other: str
    ) -> str:
        try:
            shell = await login.shell()
        except SshError as exc:
            return f"Closure: not shown (cannot log in: {exc})."
        text, logged = await closure.review(
            shell=shell,
            nix_command=self.settings.nix,
            new=plan.new,
            machine=plan.machine,
            job=ctx.job.id,
            chat=self.chat,
            chat_id=chat_id,
            other_text=other,
            timeout=self.tuning.ssh_timeout,
            build_timeout=self.tuning.nixos_anywhere_timeout,
            kill_grace=self.tuning.stop_grace,
        )
        ctx.output(logged)
        return text

    # -- behind the guard ----------------------------------------------------------------------

    async def _guarded(
        self,
        ctx: JobContext,
        target: Target,
        login: Login,
        plan: Plan,
        select: list[str],
        *,
        user_id: int,
        chat_id: int,
        offer: bool = True,
    ) -> Outcome:
        watch = GuardWatch(ctx, target, plan, self.store, self.tuning, user_id=user_id)
        await ctx.enter(ACTIVATE)
        try:
            shell = await login.shell()
        except SshError as exc:
            raise ctx.fail(
                f"cannot activate on {target.name}: {exc}; nothing was activated"
            ) from None
        await watch.activate(select, shell)
        login.close()  # the confirmation needs a login made after the activation
        ctx.refuse_cancel(GUARD_WINDOW.format(machine=target.name, generation=plan.generation))
        try:
            await ctx.enter(CONFIRM)
            health = await watch.confirm(enter_health=lambda: ctx.enter(HEALTH))
        finally:
            ctx.refuse_cancel(None)
        summary = (
            f"switched {target.name} to generation {watch.new_generation} ({plan.new}); "
            f"{health.summary()}"
        )
        if plan.reboot_parts:
            summary += f"; {', '.join(plan.reboot_parts)} changed: reboot to use them"
        if plan.reboot_parts and offer:
            self.offers.offer(ctx.job.id, target.machine, plan, user_id=user_id, chat_id=chat_id)
        return Outcome(summary)


def _remove(path: Path) -> None:
    """The known_hosts file and its folder go when the copy is over."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
