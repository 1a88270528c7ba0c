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
from bot.jobs.runner import busy_text
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
        names = ", ".join(m.name for m in machines)
        question = (
            f"{len(machines)} machines now run a system with a new kernel, initrd or modules, "
            f"used from their next boot: {names}. Reboot them one at a time (a reboot test "
            f"each; a LUKS machine asks for its passphrase)?"
        )
        audit = ("reboot after rollout", "", f"rollout job {job_id}: {names}"[:200])
        if not await self._ask(job_id, question, "Reboot these", audit, user_id, chat_id):
            return
        for machine in machines:
            try:
                job = await self.tester.start(
                    machine, trigger=f"after rollout job {job_id}", user_id=user_id, chat_id=chat_id
                )
            except JobConflict as exc:
                await self.chat.post(chat_id, f"Skipped: {busy_text(machine.name, exc)}")
                continue
            if not await self._ended(job.id, timeout=None):
                return

    async def _offer_reboot(
        self, job_id: int, machine: Machine, plan: Plan, *, user_id: int, chat_id: int
    ) -> None:
        unlock = " through the unlock of its disk" if machine.luks else ""
        question = (
            f"{machine.name} now runs a system with a new {', '.join(plan.reboot_parts)}, used "
            f"from its next boot. Reboot it now (a reboot test{unlock})?"
        )
        audit = ("reboot after update", machine.name, f"update job {job_id}")
        if not await self._ask(job_id, question, "Reboot now", audit, user_id, chat_id):
            return
        try:
            await self.tester.start(
                machine, trigger=f"after update job {job_id}", user_id=user_id, chat_id=chat_id
            )
        except JobConflict as exc:
            await self.chat.post(chat_id, f"Not rebooted: {busy_text(machine.name, exc)}")

    async def _ask(
        self,
        job_id: int,
        question: str,
        yes: str,
        audit: tuple[str, str, str],
        user_id: int,
        chat_id: int,
    ) -> bool:
        """Once the job ended (its lock released), the offer to the person who started it,
        audited as ``audit`` (action, machine, detail); whether they pressed ``yes``."""
        if not await self._ended(job_id):
            return False
        timeout = self.tuning.confirm_timeout
        pressed = await self.asker.confirm(
            chat_id,
            user_id,
            f"{question}\n\nAnswer within {format_duration(timeout)}.",
            yes=yes,
            no="Later",
            timeout=timeout,
        )
        action, machine, detail = audit
        await self.store.audit(
            user_id=user_id,
            username="",
            action=action,
            machine=machine,
            decision=pressed.value,
            detail=detail,
        )
        return pressed.yes

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
