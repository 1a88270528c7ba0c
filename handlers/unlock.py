"""/unlock <machine>: check the initrd and ask for the passphrase now."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.flows.services import Services
from bot.flows.unlock import Unlocker
from handlers.common import Background, named_machine, sender


class UnlockHandlers:
    def __init__(self, services: Services, unlocker: Unlocker) -> None:
        self.s = services
        self.unlocker = unlocker
        self.background = Background()

    async def unlock(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = sender(update)
        machine = await named_machine(message, self.s.inventory)
        if machine is None:
            return
        if not machine.luks:
            await message.reply_text(f"{machine.name} has no LUKS disk: nothing to unlock.")
            return
        if not self.unlocker.active(machine.name):
            await message.reply_text(f"Checking {machine.name}'s initrd…")
        elif self.s.answers.has_secret_pending(user.id):
            await message.reply_text(f"{machine.name} is being unlocked already; answer my prompt.")
        else:
            await message.reply_text(
                f"{machine.name} is being unlocked already; I will tell you how it ends."
            )
        by = f"@{user.username}" if user.username else str(user.id)

        async def run() -> None:
            result = await self.unlocker.unlock(machine, trigger=f"/unlock by {by}", ask=[user.id])
            if message.chat.id not in result.told:
                await self.s.chat.post(
                    message.chat.id, ("✅ " if result.ok else "❌ ") + result.summary
                )

        self.background.spawn(run(), f"unlock-command-{machine.name}")


def register(application: Application, services: Services, unlocker: Unlocker) -> None:  # type: ignore[type-arg]
    application.add_handler(CommandHandler("unlock", UnlockHandlers(services, unlocker).unlock))
    services.commands.add("unlock")
