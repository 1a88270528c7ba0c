"""The weekly report, registered with PTB's JobQueue as the watcher's schedules are.

One job with the stable id ``report:weekly`` and ``replace_existing``: registered again at
every start, never doubled, nothing pickled (bot/flows/watch/schedule.py). A report that
could not start on time (the bot was down at 08:00) is still sent within the grace time.
"""

from __future__ import annotations

import logging
from datetime import UTC

from bot.core.cron import cron_trigger
from bot.flows.report.reporter import Reporter
from bot.flows.watch.schedule import JobQueueLike

log = logging.getLogger(__name__)
WEEKLY_ID = "report:weekly"
GRACE = 6 * 3600


def register_weekly(queue: JobQueueLike, cron: str, reporter: Reporter) -> bool:
    """Register the weekly report on ``cron``; False (and nothing registered) for ""."""
    if not cron:
        return False

    async def weekly(context: object) -> None:
        try:
            await reporter.weekly()
        except Exception:
            log.exception("the weekly report failed")

    queue.run_custom(
        weekly,
        name=WEEKLY_ID,
        data=cron,
        job_kwargs={
            "trigger": cron_trigger(cron, queue.scheduler.timezone),
            "id": WEEKLY_ID,
            "replace_existing": True,
            "misfire_grace_time": GRACE,
            "coalesce": True,
        },
    )
    return True


def weekly_line(queue: JobQueueLike) -> str | None:
    """The weekly report as /schedule lists it beside the reboot tests: its cron (kept as
    the job's data) and its next run; None when none is registered."""
    for job in queue.jobs():
        if job.name == WEEKLY_ID:
            when = job.next_t
            next_run = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else "paused"
            return f"• weekly report to the admins ({job.data}) — next {next_run}"
    return None
