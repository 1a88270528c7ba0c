"""One activation behind the rollback guard, followed from the bot's side.

The bot arms the guard, activates, then tries to confirm before the guard fires: a fresh
pinned login made after the activation must see the new system, and the health checks
must pass. Confirmed in time → the timer is stopped and the new system stays. Otherwise
the machine undoes it with the guard's own service: when the timer fires, or at once
when the activation itself failed (the bot starts that service, on the machine, instead of
waiting out the guard). The bot waits until a login sees the old generation again, then
says why it rolled back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

from bot.config.tuning import Tuning
from bot.core.durations import format_duration
from bot.core.poll import PollTimeout, poll_until
from bot.flows.update import guard
from bot.flows.update.login import fresh_shell
from bot.flows.update.plan import Plan
from bot.jobs.context import JobContext, JobFailed
from bot.remote.health import Health
from bot.remote.place import Place
from bot.remote.shell import SESSION_MAX, RemoteShell
from bot.remote.ssh import SshError
from bot.remote.target import Target
from store import Store

# After the timer fires, the switch back itself takes time (a real activation: seconds).
ROLLBACK_SLACK = 60.0


@dataclass(frozen=True)
class Look:
    """One attempt to confirm: ``why`` says what was wrong (empty when confirmed)."""

    why: str = ""
    health: Health | None = None

    @property
    def ok(self) -> bool:
        return not self.why


async def _nothing() -> None:
    return None


#: How a job that the machine switched back ends ("rolled back to generation 3 because …").
ROLLED_BACK = "rolled back to generation"


class GuardWatch:
    """Arms the guard, activates, and confirms or waits for the machine to switch back."""

    def __init__(
        self,
        ctx: JobContext,
        target: Target,
        plan: Plan,
        store: Store,
        tuning: Tuning,
        *,
        user_id: int,
    ) -> None:
        self.ctx = ctx
        self.target = target
        self.plan = plan
        self.store = store
        self.user_id = user_id
        self.ssh_timeout = tuning.ssh_timeout
        self.poll = target.reach.poll
        self.timeout = target.machine.rollback_timeout
        self.armed_at = 0.0
        self.new_generation: int | None = None
        self.problem = ""
        self._healthy = False
        self._fired = False
        self._enter_health: Callable[[], Awaitable[None]] = _nothing

    @property
    def job_id(self) -> int:
        return self.ctx.job.id

    @property
    def margin(self) -> float:
        """Stop confirming this long before the timer fires, so disarming never races it."""
        return min(3.0, self.timeout / 4)

    async def activate(self, select: list[str], shell: RemoteShell) -> None:
        """Select the new generation, arm the guard, and run the activation detached,
        through ``shell`` (on a login made before the activation)."""
        ctx, plan, name = self.ctx, self.plan, self.target.name
        timeout = self.ssh_timeout
        arm = guard.arm(self.job_id, back_to=plan.generation, seconds=self.timeout)
        try:
            # One round trip: what the machine runs, then the new generation and the guard.
            first = f"{guard.marked(select, 'SELECTED')} && {guard.marked(arm, 'ARMED')}"
            reads = [guard.list_generations(), ["readlink", "/run/current-system"]]
            script = [*reads, guard.running_guards(), first, reads[0]]
            results = await shell.run(script, timeout=timeout)
            gens, running, timers, step, after = (r.stdout_text for r in results)
            was = guard.parse_generations(gens)[1]
            self.new_generation = guard.parse_generations(after)[1]
            selected, armed = "SELECTED" in step, "ARMED" in step
            running = guard.first_line(running)
            changed = (
                was != plan.generation or running != plan.current or guard.armed_guards(timers)
            )
            if changed or not armed:
                await self._undo(shell, selected=selected, armed=armed, was=was)
                if changed:
                    raise ctx.fail(
                        f"{name} changed since you confirmed (generation {was}, "
                        f"{running or 'no system'}); nothing was activated"
                    )
                what = "arm the rollback guard" if selected else "select the new generation"
                raise ctx.fail(f"could not {what} ({guard.why(results[3])}); nothing was activated")
            self.armed_at = time.monotonic()
            await ctx.note(
                f"rollback guard {guard.rollback_unit(self.job_id)} armed: unless I confirm "
                f"within {format_duration(self.timeout)}, {name} switches back to "
                f"generation {plan.generation} by itself"
            )
            await self._audit("activating", f"generation {self.new_generation}: {plan.new}")
            await self._activate(shell)
        except SshError as exc:
            if not self.armed_at:
                await self._look_after_cut(exc)
            ctx.output(f"the activation cut the connection: {exc}")

    async def _look_after_cut(self, cut: SshError) -> NoReturn:
        """The check-select-arm line was cut: it may have selected the new generation, and
        armed the guard, or not. A fresh pinned login looks, and puts the profile back on
        the recorded generation (and stops the guard) unless the arm was confirmed; the
        activation, a later line, never ran."""
        ctx, plan, name = self.ctx, self.plan, self.target.name
        timeout, unit = self.ssh_timeout, guard.rollback_unit(self.job_id)
        head = f"cannot activate on {name}: the connection dropped ({cut})"
        try:
            async with fresh_shell(self.target) as shell:
                seen = await guard.read_state(shell, timeout=timeout)
                selected = seen.current is not None and seen.current != plan.generation
                if selected and seen.current is not None:
                    link = guard.generation_link(seen.current)
                    selected = await guard.readlink(shell, link, timeout=timeout) == plan.new
                undo = [guard.disarm(self.job_id)] if unit in seen.armed else []
                if selected:
                    undo.append(guard.switch_generation(plan.generation))
                after = seen
                if undo:
                    await shell.run(undo, timeout=timeout)
                    after = await guard.read_state(shell, timeout=timeout)
        except SshError as again:
            raise ctx.fail(
                f"{head}, and a fresh login failed too ({again}): the new generation may be "
                f"selected without its guard. Nothing was activated; look with /status {name}"
            ) from None
        back = (
            after.current == plan.generation
            and unit not in after.armed
            and after.running == plan.current
        )
        if not back:
            raise ctx.fail(
                f"{head}; a fresh login finds generation {after.current} selected "
                f"(running {after.running or 'no known system'}). Nothing was activated; "
                f"look with /status {name}"
            )
        what = []
        if unit in seen.armed:
            what.append("stopped the guard it had armed")
        if selected:
            what.append(f"put the profile back on generation {plan.generation}")
        done = " and ".join(what) or f"generation {plan.generation} was still selected"
        raise ctx.fail(f"{head}; a fresh login looked: {done}. Nothing was activated")

    async def _undo(
        self, shell: RemoteShell, *, selected: bool, armed: bool, was: int | None
    ) -> None:
        """Before any activation: the guard stopped and the profile put back as it was."""
        undo = [guard.disarm(self.job_id)] if armed else []
        if selected and was is not None:
            undo.append(guard.switch_generation(was))
        if undo:
            await shell.run(undo, timeout=self.ssh_timeout)

    async def _activate(self, shell: RemoteShell) -> None:
        command = guard.detached(guard.activate(self.job_id, self.plan.new))
        (done,) = await shell.run([command], timeout=self.timeout, section_max=SESSION_MAX)
        for line in (done.stdout_text + done.stderr_text).splitlines()[-200:]:
            self.ctx.output(guard.first_line(line))
        if not done.ok:
            lines = [ln.strip() for ln in done.stderr_text.splitlines() if ln.strip()]
            # switch-to-configuration's verdict line, else its last line.
            said = [ln for ln in lines if ln.startswith(("warning:", "error:"))] or lines
            last = f": {' '.join(said[-1].split())[:200]}" if said else ""
            self.problem = f"the activation failed (exit {done.exit_status}{last})"
            await self._roll_back_now(shell)

    async def _roll_back_now(self, shell: RemoteShell) -> None:
        """A failed activation is not waited out: the guard's own service is started now,
        on the login that ran the activation (a fresh one may no longer be possible)."""
        name, unit = self.target.name, guard.rollback_unit(self.job_id)
        try:
            (started,) = await shell.run(
                [guard.roll_back_now(self.job_id)], timeout=self.ssh_timeout
            )
        except SshError as exc:
            why = str(exc)
        else:
            if started.ok:
                self.ctx.output(f"started {unit}.service on {name}: switching back now")
                self.problem += "; I started the rollback at once"
                return
            why = guard.why(started)
        self.ctx.output(f"could not start {unit}.service now ({why}): its timer will")

    async def confirm(self, *, enter_health: Callable[[], Awaitable[None]]) -> Health:
        """Confirm in time and disarm, or wait for the machine's own rollback (JobFailed)."""
        if self.problem:
            await self._rolled_back(self.problem)
        self._enter_health = enter_health
        try:
            seen = await poll_until(
                self._look,
                lambda seen: seen.ok or self._fired,
                timeout=max(0.0, self._deadline - time.monotonic()),
                interval=self.poll,
            )
        except PollTimeout as exc:
            last: Look = exc.last
            await self._rolled_back(
                f"{last.why} within {format_duration(self.timeout)} of the activation"
            )
        if not seen.ok:
            await self._rolled_back(seen.why)
        assert seen.health is not None
        await self._audit("switched", f"generation {self.new_generation}")
        await self.store.update_machine(
            self.target.name, state=Place.SYSTEM, detail=f"generation {self.new_generation}"
        )
        return seen.health

    @property
    def _deadline(self) -> float:
        return self.armed_at + self.timeout - self.margin

    async def _look(self) -> Look:
        """A fresh pinned login, made now, must see the new system and pass the health
        checks; then, on the same login, the guard is disarmed."""
        try:
            async with fresh_shell(self.target) as shell:
                health = await self.target.health_in(shell)
                running = await guard.readlink(
                    shell, "/run/current-system", timeout=self.ssh_timeout
                )
                if running != self.plan.new:
                    return Look(f"it runs {running or 'no known system'}, not the new one")
                if not self._healthy:
                    self._healthy = True
                    await self._enter_health()
                problems = health.problems_since(self.plan.health)
                if problems:
                    return Look(f"the health check failed: {'; '.join(problems)}", health)
                if time.monotonic() > self._deadline:
                    return Look("the confirmation came too late to stop the guard", health)
                seen = await self._disarm(shell, health)
        except SshError as exc:
            return Look(f"no pinned login succeeded ({exc})")
        return seen

    async def _disarm(self, shell: RemoteShell, health: Health) -> Look:
        """Stop the timer, then make sure it had not fired."""
        first = guard.marked(guard.disarm(self.job_id), "DISARMED")
        state = await guard.read_state(shell, timeout=self.ssh_timeout, first=first)
        if state.current != self.new_generation or state.running != self.plan.new:
            self._fired = True
            return Look("the guard fired before it could be disarmed", health)
        if "DISARMED" not in state.first:
            return Look("the guard could not be disarmed", health)
        self.ctx.output(f"guard {guard.rollback_unit(self.job_id)} disarmed")
        if state.elapsed:
            # Fired timers of interrupted jobs, armed before RemainAfterElapse=no: unloaded.
            (done,) = await shell.run([guard.unload(state.elapsed)], timeout=self.ssh_timeout)
            names = ", ".join(state.elapsed)
            said = "" if done.ok else f" failed ({guard.why(done)})"
            self.ctx.output(f"unloading the elapsed guards {names}{said}")
        return Look(health=health)

    async def _rolled_back(self, reason: str) -> NoReturn:
        """Wait for the machine to be back on the old generation; JobFailed either way."""
        ctx, plan, name = self.ctx, self.plan, self.target.name
        ctx.output(f"not confirmed: {reason}")
        ctx.output(f"waiting for {name} to switch back to generation {plan.generation}")
        await self._audit("not confirmed", reason[:200])
        wait = self.armed_at + self.timeout + ROLLBACK_SLACK - time.monotonic()
        try:
            await poll_until(self._back, bool, timeout=max(wait, 1.0), interval=self.poll)
        except PollTimeout:
            raise JobFailed(
                f"not confirmed ({reason}), and {name} is not back on generation "
                f"{plan.generation} {format_duration(self.timeout + ROLLBACK_SLACK)} after the "
                f"activation: look at it with /status {name}",
                phase=ctx.phase,
            ) from None
        await self._audit("rolled back", f"generation {plan.generation}: {reason[:160]}")
        raise JobFailed(f"{ROLLED_BACK} {plan.generation} because {reason}")

    async def _back(self) -> bool:
        timeout = self.ssh_timeout
        try:
            async with fresh_shell(self.target) as shell:
                now = await guard.read_state(shell, timeout=timeout)
                if now.current != self.plan.generation or now.running != self.plan.current:
                    return False
                await shell.run([guard.disarm(self.job_id)], timeout=timeout)  # unload the timer
        except SshError:
            return False
        self.ctx.output(f"{self.target.name} is back on generation {self.plan.generation}")
        return True

    async def _audit(self, decision: str, detail: str) -> None:
        await self.ctx.bookkeep(
            self.store.audit(
                user_id=self.user_id,
                username="",
                action=self.ctx.job.kind,
                machine=self.target.name,
                decision=decision,
                detail=f"job {self.job_id}: {detail}",
            )
        )
