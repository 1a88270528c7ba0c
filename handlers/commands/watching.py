"""/reboot <machine> (a reboot test on demand), /check <machine> and /schedule:
the watcher's commands."""

from __future__ import annotations

from datetime import UTC

from bot.chat.access import Access
from bot.chat.asker import Asker
from bot.chat.commands import Arg, Need, Right
from bot.chat.port import ChatPort
from bot.core.tasks import Background
from bot.flows.report.schedule import weekly_line
from bot.flows.watch.reboot_test import RebootTester
from bot.flows.watch.schedule import Schedules
from bot.flows.watch.watcher import Watcher
from bot.jobs.runner import busy_text
from handlers.plumbing.paging import Pager
from handlers.plumbing.registry import Call, command
from store import JobConflict


class WatchCommands:
    def __init__(
        self,
        *,
        tester: RebootTester,
        watcher: Watcher,
        schedules: Schedules | None,
        access: Access,
        chat: ChatPort,
        asker: Asker,
        confirm_timeout: float,
        pager: Pager,
    ) -> None:
        self.pager = pager
        self.tester = tester
        self.watcher = watcher
        self.schedules = schedules
        self.access = access
        self.chat = chat
        self.asker = asker
        self.confirm_timeout = confirm_timeout
        self.background = Background()

    @command(
        "reboot",
        "reboot test: down, unlock, healthy",
        arg=Arg.MACHINE,
        right=Right.MACHINE,
        needs=(Need.PINNED,),
    )
    async def reboot(self, call: Call) -> None:
        machine = call.named_machine
        chat_id = call.chat_id
        unlock = (
            " It will unlock itself (auto-unlock)."
            if machine.luks and machine.auto_unlock
            else " Someone will have to type its disk passphrase."
            if machine.luks
            else ""
        )

        async def run() -> None:
            answer = await self.asker.confirm(
                chat_id,
                call.user.id,
                f"Reboot {machine.name} now and follow it until it is healthy again?{unlock}",
                yes="Reboot",
                timeout=self.confirm_timeout,
                show_verdict=False,
            )
            if not answer.yes:
                await self.chat.post(chat_id, f"Reboot of {machine.name} {answer.value}.")
                return
            try:
                await self.tester.start(
                    machine, trigger=f"/reboot by {call.by}", user_id=call.user.id, chat_id=chat_id
                )
            except JobConflict as exc:
                await self.chat.post(chat_id, busy_text(machine.name, exc))

        self.background.spawn(run(), f"reboot-command-{machine.name}")

    @command(
        "check",
        "run the health checks now",
        arg=Arg.MACHINE,
        right=Right.MACHINE,
        needs=(Need.PINNED,),
    )
    async def check(self, call: Call) -> None:
        machine = call.named_machine
        await call.reply(f"Checking {machine.name}…")

        async def run() -> None:
            probe = await self.watcher.check_now(machine)
            if probe.health is not None:
                text = f"{machine.name}: {probe.health.report()}"
            else:
                text = f"❌ {machine.name} is {probe.problem}"
            await self.chat.post(call.chat_id, text)

        self.background.spawn(run(), f"check-command-{machine.name}")

    @command("schedule", "scheduled probes, reboot tests and the weekly report")
    async def schedule(self, call: Call) -> None:
        if self.schedules is None:
            await call.reply("No schedules: the job queue is not available.")
            return
        mine = {m.name for m in self.access.machines_for(call.user.id)}
        entries = [e for e in self.schedules.entries() if e.machine in mine]
        lines = []
        for e in entries:
            when = (
                e.next_run.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                if e.next_run
                else "paused"
            )
            lines.append(f"• {e.kind} {e.machine} ({e.every}) — next {when}")
        report = weekly_line(self.schedules.queue)
        if report is not None:
            lines.append(report)
        if not lines:
            await call.reply("Nothing is scheduled.")
            return
        await self.pager.reply(call, lines, header=f"Schedules ({len(lines)}):")
