"""/unlock <machine>: check the initrd and ask for the passphrase now."""

from __future__ import annotations

from bot.chat.answers import Answers
from bot.chat.commands import Arg, Need, Right
from bot.chat.port import ChatPort
from bot.core.tasks import Background
from bot.flows.unlock import Unlocker
from handlers.plumbing.registry import Call, command


class UnlockCommands:
    def __init__(self, *, unlocker: Unlocker, answers: Answers, chat: ChatPort) -> None:
        self.unlocker = unlocker
        self.answers = answers
        self.chat = chat
        self.background = Background()

    @command(
        "unlock",
        "unlock a machine waiting in its initrd",
        arg=Arg.MACHINE,
        right=Right.MACHINE,
        needs=(Need.LUKS,),
    )
    async def unlock(self, call: Call) -> None:
        machine = call.named_machine
        user_id = call.user.id
        if not self.unlocker.active(machine.name):
            await call.reply(f"Checking {machine.name}'s initrd…")
        elif self.answers.has_secret_pending(user_id):
            await call.reply(f"{machine.name} is being unlocked already; answer my prompt.")
        else:
            await call.reply(
                f"{machine.name} is being unlocked already; I will tell you how it ends."
            )

        async def run() -> None:
            result = await self.unlocker.unlock(
                machine, trigger=f"/unlock by {call.by}", ask=[user_id]
            )
            if call.chat_id not in result.told:
                await self.chat.post(call.chat_id, ("✅ " if result.ok else "❌ ") + result.summary)

        self.background.spawn(run(), f"unlock-command-{machine.name}")
