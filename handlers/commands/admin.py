"""/reload: the admins' way to put an edited inventory (and admins) in force."""

from __future__ import annotations

from bot.chat.commands import Right
from bot.flows.reload import Reloader, Who
from handlers.plumbing.registry import Call, command


class AdminCommands:
    """What only admins run on the bot itself."""

    def __init__(self, reloader: Reloader) -> None:
        self.reloader = reloader

    @command("reload", "read the inventory and admins again", right=Right.ADMIN)
    async def reload(self, call: Call) -> None:
        report = await self.reloader.reload(Who(call.user.id, call.user.username or ""))
        await call.reply(report.text)
