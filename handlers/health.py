"""/reboot <machine> (a reboot test on demand), /check <machine> and /schedule."""

from __future__ import annotations

from datetime import UTC

from telegram import Message, Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.config.inventory import Machine
from bot.flows.engine import Engine
from bot.flows.services import Services
from bot.flows.watch.schedule import Schedules
from handlers.common import Background, named_machine, sender
from store import JobConflict


class HealthHandlers:
    def __init__(self, services: Services, engine: Engine) -> None:
        self.s = services
        self.engine = engine
        self.background = Background()

    async def _installed(self, message: Message) -> Machine | None:
        """The machine the command names, if the bot knows its pinned host key; else it says why."""
        machine = await named_machine(message, self.s.inventory)
        if machine is None:
            return None
        known = await self.s.store.machine(machine.name)
        if not known.host_key:
            await message.reply_text(
                f"{machine.name} has no pinned host key: install it with /deploy first."
            )
            return None
        return machine

    async def reboot(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = sender(update)
        machine = await self._installed(message)
        if machine is None:
            return
        chat_id = message.chat.id
        by = f"@{user.username}" if user.username else str(user.id)
        unlock = (
            " It will unlock itself (auto-unlock)."
            if machine.luks and machine.auto_unlock
            else " Someone will have to type its disk passphrase."
            if machine.luks
            else ""
        )
        confirmation = self.s.confirmations.open(user.id)
        await self.s.chat.post(
            chat_id,
            f"Reboot {machine.name} now and follow it until it is healthy again?{unlock}",
            buttons=confirmation.buttons("Reboot"),
        )

        async def run() -> None:
            answer = await self.s.confirmations.wait(confirmation, self.s.tuning.confirm_timeout)
            if not answer:
                said = "cancelled" if answer is False else "expired"
                await self.s.chat.post(chat_id, f"Reboot of {machine.name} {said}.")
                return
            try:
                await self.engine.reboot_tester.start(
                    machine, trigger=f"/reboot by {by}", user_id=user.id, chat_id=chat_id
                )
            except JobConflict as exc:
                await self.s.chat.post(
                    chat_id,
                    f"{machine.name} already has job {exc.job.id} ({exc.job.kind}); "
                    f"/log {exc.job.id} shows it.",
                )

        self.background.spawn(run(), f"reboot-command-{machine.name}")

    async def check(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, _ = sender(update)
        machine = await self._installed(message)
        if machine is None:
            return
        chat_id = message.chat.id
        await message.reply_text(f"Checking {machine.name}…")

        async def run() -> None:
            probe = await self.engine.watcher.check_now(machine)
            if probe.health is not None:
                text = f"{machine.name}: {probe.health.report()}"
            else:
                text = f"❌ {machine.name} is {probe.problem}"
            await self.s.chat.post(chat_id, text)

        self.background.spawn(run(), f"check-command-{machine.name}")

    async def schedule(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = sender(update)
        schedules = context.application.bot_data.get("schedules")
        if not isinstance(schedules, Schedules):
            await message.reply_text("No schedules: the job queue is not available.")
            return
        mine = {m.name for m in self.s.access.machines_for(user.id)}
        entries = [e for e in schedules.entries() if e.machine in mine]
        if not entries:
            await message.reply_text("Nothing is scheduled.")
            return
        lines = [f"Schedules ({len(entries)}):"]
        for e in entries:
            when = (
                e.next_run.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                if e.next_run
                else "paused"
            )
            lines.append(f"• {e.kind} {e.machine} ({e.every}) — next {when}")
        await message.reply_text("\n".join(lines))


def register(application: Application, services: Services, engine: Engine) -> None:  # type: ignore[type-arg]
    h = HealthHandlers(services, engine)
    for name, callback in (("reboot", h.reboot), ("check", h.check), ("schedule", h.schedule)):
        application.add_handler(CommandHandler(name, callback))
        services.commands.add(name)
