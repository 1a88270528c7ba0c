"""/deploy, /reinstall and /rollback: start the install or update job; the job itself asks
for confirmation. /deploy updates a machine that answers with its pinned system key."""

from __future__ import annotations

from telegram.constants import ChatType

from bot.chat.commands import Arg, Need, Right
from bot.flows.deploy.pipeline import Deployer
from bot.flows.rollout.runner import Rollouts
from bot.flows.route import Route, Router
from bot.flows.update.pipeline import Updater
from handlers.gate import store_unavailable_text
from handlers.registry import Call, command
from store import JobConflict
from store.database import StoreUnavailable


class DeployCommands:
    def __init__(
        self, router: Router, deployer: Deployer, updater: Updater, rollouts: Rollouts
    ) -> None:
        self.router = router
        self.deployer = deployer
        self.updater = updater
        self.rollouts = rollouts

    @command(
        "deploy",
        "install a machine (erases its disk), or update an installed one; several: a rollout",
        arg=Arg.MACHINES,
        right=Right.MACHINE,
    )
    async def deploy(self, call: Call) -> None:
        if call.selection:
            await self._rollout(call)
            return
        machine = call.machine
        assert machine is not None  # the gate resolved it
        decision = await self.router.decide(
            machine, user_id=call.user.id, username=call.user.username or ""
        )
        if decision.route is Route.REFUSED:
            await call.reply(decision.text)
        elif decision.route is Route.UPDATE:
            await self._guarded(call, rollback=False)
        else:
            await self._start(call, reinstall=False)

    async def _rollout(self, call: Call) -> None:
        """Plan the update of every machine named, then one job asks and runs it."""
        user_id = call.user.id
        admin = user_id in self.rollouts.current.admins
        plan = await self.rollouts.plan(call.selection, user_id=user_id, admin=admin)
        if not plan.machines:
            await call.reply(
                "\n".join([f"No machine of {plan.label} to update.", *plan.left_out()])
            )
            return
        try:
            await self.rollouts.start(plan, user_id=user_id, chat_id=call.chat_id)
        except StoreUnavailable as exc:
            await call.reply(store_unavailable_text(exc))
        except JobConflict as exc:
            await call.reply(busy_text(exc.job.machine, exc))

    @command(
        "rollback",
        "switch a machine back to its previous generation",
        arg=Arg.MACHINE,
        right=Right.MACHINE,
        needs=(Need.PINNED,),
    )
    async def rollback(self, call: Call) -> None:
        await self._guarded(call, rollback=True)

    async def _guarded(self, call: Call, *, rollback: bool) -> None:
        machine = call.machine
        assert machine is not None  # the gate resolved it
        start = self.updater.start_rollback if rollback else self.updater.start
        try:
            await start(machine, user_id=call.user.id, chat_id=call.chat_id)
        except StoreUnavailable as exc:
            await call.reply(store_unavailable_text(exc))
        except JobConflict as exc:
            await call.reply(busy_text(machine.name, exc))

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
            await call.reply(busy_text(machine.name, exc))
        # The job reports through its own progress message.


def busy_text(name: str, exc: JobConflict) -> str:
    running = exc.job
    return (
        f"{name} already has job {running.id} ({running.kind}, {running.state}"
        f"{', at ' + running.phase if running.phase else ''}). /log {running.id} shows it; "
        f"/cancel {running.id} stops it."
    )
