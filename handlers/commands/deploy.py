"""/deploy, /reinstall and /rollback: start the install or update job; the job itself asks
for confirmation. /deploy updates a machine that answers with its pinned system key."""

from __future__ import annotations

from telegram import CallbackQuery, Message
from telegram.constants import ChatType

from bot.chat.access import Access
from bot.chat.commands import Arg, Need, Right
from bot.flows.deploy.pipeline import Deployer
from bot.flows.rollout.runner import DETAIL_PREFIX, ROLLOUT_KIND, Rollouts
from bot.flows.route import Route, Router
from bot.flows.update.pipeline import Updater
from bot.jobs.runner import busy_text
from handlers.plumbing.gate import store_unavailable_text
from handlers.plumbing.paging import Pager
from handlers.plumbing.registry import Call, command
from store import JobConflict, Store
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
        machine = call.named_machine
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
        machine = call.named_machine
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
        machine = call.named_machine
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


class RolloutDetail:
    """The "Each machine" button under a rollout's progress message: the per-machine
    detail, paged, for the person who started the rollout and admins (as /cancel)."""

    prefix = DETAIL_PREFIX
    action = "rollout detail"

    def __init__(self, rollouts: Rollouts, access: Access, store: Store, pager: Pager) -> None:
        self.rollouts = rollouts
        self.access = access
        self.store = store
        self.pager = pager

    async def on_press(self, query: CallbackQuery) -> bool:
        """Post the detail under the message; False (and the presser told) when refused."""
        prefix, _, number = (query.data or "").partition(":")
        job = await self.store.job(int(number)) if number.isdigit() and len(number) < 12 else None
        if prefix != DETAIL_PREFIX or job is None or job.kind != ROLLOUT_KIND:
            await query.answer("This rollout is no longer known.")
            return False
        user = query.from_user.id
        if job.user_id != user and not self.access.is_admin(user):
            await query.answer("Only who started this rollout, or an admin, can see this.")
            return False
        await query.answer()
        if not isinstance(query.message, Message):
            return False
        lines = await self.rollouts.detail(job.id)
        header = f"Rollout {job.id} ({job.machine}): {len(lines)} machines"
        await self.pager.answer(query.message, user, lines or ["(no machine yet)"], header=header)
        return True
