"""/report [machine|tag:…] (a picture of the last 7 days) and /history <machine>."""

from __future__ import annotations

import logging

from bot.chat.access import Access
from bot.chat.commands import Arg, Need, Right, tag_in
from bot.chat.port import ChatPort
from bot.config.inventory import TAG, Machine
from bot.core.tasks import Background
from bot.flows.history import HistoryError, read_history
from bot.flows.report import Reporter
from bot.flows.report.week import DAYS
from bot.remote.fleet import Fleet
from handlers.plumbing.paging import Pager
from handlers.plumbing.registry import Call, command

log = logging.getLogger(__name__)


class ReportCommands:
    def __init__(
        self,
        *,
        reporter: Reporter,
        access: Access,
        fleet: Fleet,
        chat: ChatPort,
        pager: Pager,
        timeout: float,
    ) -> None:
        self.reporter = reporter
        self.access = access
        self.fleet = fleet
        self.chat = chat
        self.pager = pager
        self.timeout = timeout
        self.background = Background()

    @command(
        "report",
        f"a picture of the last {DAYS} days",
        arg=Arg.SELECTION,
        right=Right.MACHINE,
        needs=(Need.PRIVATE_CHAT,),
    )
    async def report(self, call: Call) -> None:
        machines = await self._selected(call)
        if not machines:
            return
        chat_id = call.chat_id
        count = len(machines)
        await call.reply(
            f"Drawing the last {DAYS} days of {count} machine{'s' if count != 1 else ''}…"
        )

        async def run() -> None:
            try:
                report = await self.reporter.send(chat_id, machines)
            except Exception:
                log.exception("the report could not be drawn")
                await self.chat.post(chat_id, "⚠️ I could not draw the report; it is logged.")
                return
            if not report.delivered:
                await self.chat.post(chat_id, "⚠️ Telegram did not take the picture; see my log.")

        self.background.spawn(run(), f"report-{chat_id}")

    async def _selected(self, call: Call) -> list[Machine]:
        """The machine the gate resolved, those tagged ``tag:…`` of the asker's, or all of
        the asker's; [] (and the asker told why) when that is none."""
        if call.machine is not None:
            return [call.machine]
        mine = self.access.machines_for(call.user.id)
        word = call.args[0] if call.args else ""
        if not word:
            if not mine:
                await call.reply("You have no machines to report on.")
            return mine
        tag = tag_in(word) or ""
        if not TAG.fullmatch(tag):
            await call.reply("tag:… names a tag of the inventory, such as tag:web.")
            return []
        tagged = [m for m in mine if tag in m.tags]
        if not tagged:
            await call.reply(f"None of your machines is tagged {tag}.")
        return tagged

    @command(
        "history",
        "its system generations, newest first",
        arg=Arg.MACHINE,
        right=Right.MACHINE,
        needs=(Need.PINNED, Need.PRIVATE_CHAT),
    )
    async def history(self, call: Call) -> None:
        machine = call.named_machine

        async def run() -> None:
            target = await self.fleet.target(machine)
            try:
                found = await read_history(target, timeout=self.timeout)
            except HistoryError as exc:
                await self.chat.post(call.chat_id, f"❌ {exc}")
                return
            if not found.generations:
                await self.chat.post(call.chat_id, f"{machine.name} lists no generations.")
                return
            count = len(found.generations) + found.left_out
            header = f"{machine.name}: {count} generation{'s' if count != 1 else ''}, newest first"
            footer = f"({found.left_out} older ones not shown)" if found.left_out else ""
            lines = [g.describe() for g in found.generations]
            await self.pager.reply(call, lines, header=header, footer=footer)

        self.background.spawn(run(), f"history-{machine.name}")
