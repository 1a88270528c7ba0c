"""/deploy and /reinstall: start the install job; the job itself asks for confirmation."""

from __future__ import annotations

from telegram.constants import ChatType

from bot.chat.commands import Arg, Need, Right
from bot.flows.deploy.pipeline import Deployer
from handlers.gate import store_unavailable_text
from handlers.registry import Call, command
from store import JobConflict
from store.database import StoreUnavailable


class DeployCommands:
    def __init__(self, deployer: Deployer) -> None:
        self.deployer = deployer

    @command("deploy", "install a machine (erases its disk)", arg=Arg.MACHINE, right=Right.MACHINE)
    async def deploy(self, call: Call) -> None:
        await self._start(call, reinstall=False)

    @command(
        "reinstall",
        "reinstall an installed machine",
        arg=Arg.MACHINE,
        right=Right.MACHINE,
        needs=(Need.INSTALLED_BY_BOT, Need.PRIVATE_CHAT),
    )
    async def reinstall(self, call: Call) -> None:
        await self._start(call, reinstall=True)

    async def _start(self, call: Call, *, reinstall: bool) -> None:
        machine = call.machine
        assert machine is not None  # the gate resolved it
        asks_passphrase = machine.luks and not machine.luks_passphrase_secret
        if asks_passphrase and call.message.chat.type != ChatType.PRIVATE:
            await call.reply(
                f"Starting; I will ask you for {machine.name}'s new disk passphrase in our "
                "private chat (never here)."
            )
        try:
            await self.deployer.start(
                machine, user_id=call.user.id, chat_id=call.chat_id, reinstall=reinstall
            )
        except StoreUnavailable as exc:
            await call.reply(store_unavailable_text(exc))
        except JobConflict as exc:
            running = exc.job
            await call.reply(
                f"{machine.name} already has job {running.id} ({running.kind}, {running.state}"
                f"{', at ' + running.phase if running.phase else ''}). /log {running.id} shows it; "
                f"/cancel {running.id} stops it."
            )
        # The job reports through its own progress message.
