"""/adopt <machine>: pin the keys of a machine installed without the bot."""

from __future__ import annotations

from bot.chat.commands import Arg, Right
from bot.core.tasks import Background
from bot.flows.adopt import Adopter
from handlers.plumbing.registry import Call, command


class AdoptCommands:
    def __init__(self, adopter: Adopter) -> None:
        self.adopter = adopter
        self.background = Background()

    @command(
        "adopt",
        "pin the keys of a machine installed without the bot",
        arg=Arg.MACHINE,
        right=Right.MACHINE,
    )
    async def adopt(self, call: Call) -> None:
        machine = call.named_machine
        # The confirmation waits for a button press, which is another update: not here.
        self.background.spawn(
            self.adopter.adopt(machine, user_id=call.user.id, by=call.by, chat_id=call.chat_id),
            f"adopt-{machine.name}",
        )
