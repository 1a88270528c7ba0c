"""Cron's weekdays: 0 and 7 are Sunday, 1 is Monday, as the README and crontab(5) say."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.core.cron import cron_trigger
from tests.botrig import BotRig

MONDAY_NOON = datetime(2026, 12, 7, 12, tzinfo=UTC)


def next_fire(expression: str, after: datetime = MONDAY_NOON) -> datetime:
    fire = cron_trigger(expression, UTC).get_next_fire_time(None, after)
    assert isinstance(fire, datetime)
    return fire


@pytest.mark.parametrize(
    ("expression", "day", "weekday"),
    [
        ("0 4 * * 0", 13, "Sunday"),
        ("0 4 * * 7", 13, "Sunday"),
        ("0 8 * * 1", 14, "Monday"),
        ("0 8 * * mon", 14, "Monday"),
        ("0 8 * * 2-5", 8, "Tuesday"),
        ("0 8 * * 5-7", 11, "Friday"),
        ("0 8 * * 6,0", 12, "Saturday"),
        ("0 8 * * */3", 9, "Wednesday"),  # Sunday, Wednesday, Saturday
        ("0 8 * * 4/2", 10, "Thursday"),  # Thursday, Saturday
        ("0 8 1 * *", 1, "Friday"),
    ],
)
def test_weekdays_are_counted_as_cron_counts_them(expression: str, day: int, weekday: str) -> None:
    fire = next_fire(expression)
    assert (fire.day, fire.strftime("%A")) == (day, weekday)


@pytest.mark.parametrize(
    "expression", ["0 4 * * 8", "0 4 * * 5-1", "0 4 * * */0", "0 4 * *", "61 4 * * *"]
)
def test_what_is_no_cron_expression_is_refused(expression: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        cron_trigger(expression)


async def test_a_sunday_reboot_test_is_scheduled_on_sunday(rig: BotRig) -> None:
    await rig.start(
        '[machines.web]\nhost = "127.0.9.1"\nssh_port = 1\nreboot_check = "0 4 * * 0"\n'
        'probe_interval = "1h"\n'
    )
    assert rig.app is not None
    assert rig.app.job_queue is not None
    (job,) = rig.app.job_queue.get_jobs_by_name("reboot-test:web")
    assert job.next_t is not None
    assert job.next_t.astimezone(UTC).strftime("%A %H:%M") == "Sunday 04:00"
