"""Sends the report: reads the week, draws it off the event loop, posts it as a photo.

The caption says in words what the picture shows (the worst machines' uptime, the reboots,
the failed reboot tests, the longest unlock wait), within Telegram's 1024 characters, so
the numbers are there for someone who cannot look at the picture.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from bot.chat.port import ChatPort
from bot.config.current import Current
from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.core.telegram_limits import MAX_CAPTION
from bot.flows.report.week import LIMIT, Week, read_week
from store.health import HealthStore

if TYPE_CHECKING:
    from bot.flows.report.chart import Chart

log = logging.getLogger(__name__)
NAMED = 5  # machines named per line of the caption


@dataclass(frozen=True)
class Report:
    """What was sent: the week it was drawn from, and the picture."""

    week: Week
    chart: Chart
    caption: str
    delivered: bool


def caption(week: Week, chart: Chart) -> str:
    """The picture in words, at most 1024 characters."""
    machines = week.machines
    span = f"{week.start:%Y-%m-%d %H:%M} – {week.end:%Y-%m-%d %H:%M} UTC"
    lines = [f"📊 {len(machines)} machine{'s' if len(machines) != 1 else ''}, {span}."]
    if chart.more:
        lines.append(f"The {len(chart.shown)} worst are drawn; {chart.more} more are not.")
    probed = [m for m in machines if m.share is not None]
    if probed:
        worst = ", ".join(
            f"{m.name} {m.share * 100:.1f} %" for m in probed[:NAMED] if m.share is not None
        )
        lines.append(f"Up: {worst}.")
    unprobed = [m.name for m in machines if m.share is None]
    if unprobed:
        lines.append(f"Never probed: {_names(unprobed)}.")
    rebooted = sorted((m for m in machines if m.reboots), key=lambda m: -m.reboots)
    if rebooted:
        lines.append(
            f"Unexpected reboots: {sum(m.reboots for m in rebooted)} "
            f"({', '.join(f'{m.name} {m.reboots}' for m in rebooted[:NAMED])})."
        )
    outages = sum(m.outages for m in machines)
    if outages:
        lines.append(f"Outages: {outages}.")
    tests = [t for m in machines for t in m.tests]
    if tests:
        failed = [m.name for m in machines if m.failed_tests]
        said = f", failed on {_names(failed)}" if failed else ", all passed"
        lines.append(f"Reboot tests: {len(tests)}{said}.")
    waits = [(m.longest_wait, m.name) for m in machines if m.longest_wait is not None]
    if waits:
        longest, name = max(waits)
        count = sum(len(m.unlock_waits) for m in machines)
        lines.append(f"Unlocks: {count}, the longest wait {format_duration(longest)} ({name}).")
    text = "\n".join(lines)
    return text if len(text) <= MAX_CAPTION else text[: MAX_CAPTION - 1] + "…"


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMED])
    return shown + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")


class Reporter:
    """/report and the weekly report; one picture is drawn at a time."""

    def __init__(
        self, *, health: HealthStore, chat: ChatPort, current: Current, limit: int = LIMIT
    ) -> None:
        self.health = health
        self.chat = chat
        self.current = current
        self.limit = limit
        self._drawing = asyncio.Lock()

    async def draw(self, machines: Sequence[Machine], *, now: datetime | None = None) -> Report:
        """The week of ``machines`` and its picture (nothing sent)."""
        # matplotlib is imported with the first picture, not with the bot (a second or so).
        from bot.flows.report.chart import render

        week = await read_week(self.health, machines, now=now)
        async with self._drawing:
            chart = await asyncio.to_thread(render, week, limit=self.limit)
        return Report(week, chart, caption(week, chart), delivered=False)

    async def send(
        self, chat_id: int, machines: Sequence[Machine], *, now: datetime | None = None
    ) -> Report:
        report = await self.draw(machines, now=now)
        delivered = await self.chat.send_photo(chat_id, report.chart.png, caption=report.caption)
        return Report(report.week, report.chart, report.caption, delivered)

    async def weekly(self) -> list[Report]:
        """Every machine, to every admin's private chat."""
        machines = list(self.current.inventory)
        admins = sorted(self.current.admins)
        if not admins or not machines:
            return []
        report = await self.draw(machines)
        sent = []
        for admin in admins:
            delivered = await self.chat.send_photo(admin, report.chart.png, caption=report.caption)
            if not delivered:
                log.warning("the weekly report did not reach admin %s", admin)
            sent.append(Report(report.week, report.chart, report.caption, delivered))
        return sent
