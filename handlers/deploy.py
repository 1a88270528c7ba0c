"""/deploy and /reinstall: start the install job; the job itself asks for confirmation."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.flows.deploy.pipeline import Deployer
from bot.flows.services import Services
from handlers.common import named_machine, sender
from handlers.gate import store_unavailable_text
from store import JobConflict
from store.database import StoreUnavailable


class DeployHandlers:
    def __init__(self, services: Services, deployer: Deployer) -> None:
        self.s = services
        self.deployer = deployer

    async def deploy(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._start(update, reinstall=False)

    async def reinstall(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._start(update, reinstall=True)

    async def _start(self, update: Update, *, reinstall: bool) -> None:
        message, user = sender(update)
        machine = await named_machine(message, self.s.inventory)
        if machine is None:
            return
        if reinstall:
            known = await self.s.store.machine(machine.name)
            if not known.installed_at:
                await message.reply_text(
                    f"{machine.name} was not installed by this bot: use /deploy {machine.name}."
                )
                return
            if message.chat.type != ChatType.PRIVATE:
                await message.reply_text(
                    "Run /reinstall in our private chat: it asks you to type the name."
                )
                return
        asks_passphrase = machine.luks and not machine.luks_passphrase_secret
        if asks_passphrase and message.chat.type != ChatType.PRIVATE:
            await message.reply_text(
                f"Starting; I will ask you for {machine.name}'s new disk passphrase in our "
                "private chat (never here)."
            )
        try:
            job = await self.deployer.start(
                machine, user_id=user.id, chat_id=message.chat.id, reinstall=reinstall
            )
        except StoreUnavailable as exc:
            await message.reply_text(store_unavailable_text(exc))
            return
        except JobConflict as exc:
            running = exc.job
            await message.reply_text(
                f"{machine.name} already has job {running.id} ({running.kind}, {running.state}"
                f"{', at ' + running.phase if running.phase else ''}). /log {running.id} shows it; "
                f"/cancel {running.id} stops it."
            )
            return
        del job  # the job reports through its own progress message


def register(application: Application, services: Services, deployer: Deployer) -> None:  # type: ignore[type-arg]
    h = DeployHandlers(services, deployer)
    for name, callback in (("deploy", h.deploy), ("reinstall", h.reinstall)):
        application.add_handler(CommandHandler(name, callback))
        services.commands.add(name)
