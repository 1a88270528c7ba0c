"""After an update that changed the kernel, initrd or modules: offer the reboot they need.

The offer comes once the update job has ended (the machine's job lock is free again); the
button starts the reboot test, which goes through the unlock prompt on a LUKS machine and
ends with a health check.
"""

from __future__ import annotations

from bot.chat.asker import Asker
from bot.chat.port import ChatPort
from bot.config.inventory import Machine
from bot.config.tuning import Tuning
from bot.core.durations import format_duration
from bot.core.poll import PollTimeout, poll_until
from bot.core.tasks import Background
from bot.flows.update.plan import Plan
from bot.flows.watch.reboot_test import RebootTester
from store import Job, JobConflict, Store


class RebootOffers:
    """The "reboot now" buttons offered after updates, each a task until answered."""

    def __init__(
        self, *, store: Store, chat: ChatPort, asker: Asker, tuning: Tuning, tester: RebootTester
    ) -> None:
        self.store = store
        self.chat = chat
        self.asker = asker
        self.tuning = tuning
        self.tester = tester
        self._tasks = Background()

    async def shutdown(self) -> None:
        await self._tasks.cancel()

    def offer(
        self, job_id: int, machine: Machine, plan: Plan, *, user_id: int, chat_id: int
    ) -> None:
        self._tasks.spawn(
            self._offer_reboot(job_id, machine, plan, user_id=user_id, chat_id=chat_id),
            name=f"reboot-offer-{job_id}",
        )

    def offer_many(
        self, job_id: int, machines: list[Machine], *, user_id: int, chat_id: int
    ) -> None:
        """After a rollout: one "Reboot these" button that runs the tests one at a time."""
        self._tasks.spawn(
            self._offer_many(job_id, machines, user_id=user_id, chat_id=chat_id),
            name=f"reboot-offer-{job_id}",
        )

    async def _offer_many(
        self, job_id: int, machines: list[Machine], *, user_id: int, chat_id: int
    ) -> None:
        if not await self._ended(job_id):
            return
        timeout = self.tuning.confirm_timeout
        names = ", ".join(m.name for m in machines)
        pressed = await self.asker.confirm(
            chat_id,
            user_id,
            f"{len(machines)} machines now run a system with a new kernel, initrd or modules, "
            f"used from their next boot: {names}. Reboot them one at a time (a reboot test "
            f"each; a LUKS machine asks for its passphrase)?\n\n"
            f"Answer within {format_duration(timeout)}.",
            yes="Reboot these",
            no="Later",
            timeout=timeout,
        )
        await self.store.audit(
            user_id=user_id,
            username="",
            action="reboot after rollout",
            machine="",
            decision=pressed.value,
            detail=f"rollout job {job_id}: {names}"[:200],
        )
        if not pressed.yes:
            return
        for machine in machines:
            try:
                job = await self.tester.start(
                    machine, trigger=f"after rollout job {job_id}", user_id=user_id, chat_id=chat_id
                )
            except JobConflict as exc:
                await self.chat.post(
                    chat_id,
                    f"{machine.name} already has job {exc.job.id} ({exc.job.kind}): skipped.",
                )
                continue
            if not await self._ended(job.id, timeout=None):
                return

    async def _ended(self, job_id: int, timeout: float | None = 30.0) -> bool:
        """Whether the job ended (its lock released) within ``timeout`` (None: however long)."""

        async def state() -> Job | None:
            return await self.store.job(job_id)

        try:
            await poll_until(
                state,
                lambda j: j is None or not j.active,
                timeout=timeout if timeout is not None else 1e9,
                interval=0.1 if timeout is not None else 1.0,
            )
        except PollTimeout:
            return False
        return True

    async def _offer_reboot(
        self, job_id: int, machine: Machine, plan: Plan, *, user_id: int, chat_id: int
    ) -> None:
        """After the job ended (its lock released), offer the reboot the new kernel needs."""

        async def state() -> Job | None:
            return await self.store.job(job_id)

        try:
            await poll_until(state, lambda j: j is None or not j.active, timeout=30.0, interval=0.1)
        except PollTimeout:
            return
        unlock = " through the unlock of its disk" if machine.luks else ""
        timeout = self.tuning.confirm_timeout
        pressed = await self.asker.confirm(
            chat_id,
            user_id,
            f"{machine.name} now runs a system with a new {', '.join(plan.reboot_parts)}, used "
            f"from its next boot. Reboot it now (a reboot test{unlock})?\n\n"
            f"Answer within {format_duration(timeout)}.",
            yes="Reboot now",
            no="Later",
            timeout=timeout,
        )
        await self.store.audit(
            user_id=user_id,
            username="",
            action="reboot after update",
            machine=machine.name,
            decision=pressed.value,
            detail=f"update job {job_id}",
        )
        if not pressed.yes:
            return
        try:
            await self.tester.start(
                machine, trigger=f"after update job {job_id}", user_id=user_id, chat_id=chat_id
            )
        except JobConflict as exc:
            await self.chat.post(
                chat_id, f"{machine.name} already has job {exc.job.id} ({exc.job.kind}): not now."
            )
