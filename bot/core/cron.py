"""Cron expressions as cron reads them, for APScheduler 3.

APScheduler 3's ``CronTrigger.from_crontab`` counts the day of the week from Monday (0 is
Monday, 6 Sunday), where cron counts from Sunday (0 and 7 are Sunday, 1 Monday): given
``0 4 * * 0`` it would fire on Mondays, not Sundays. :func:`cron_trigger` renames the
numbers of that field (``0``-``7``, in lists, ranges and steps) to the day names both
agree on, so ``0 8 * * 1`` is Monday 08:00 as the README says.
"""

from __future__ import annotations

from datetime import tzinfo

from apscheduler.triggers.cron import CronTrigger

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _day(text: str) -> int:
    """A day as cron writes it: 0-7 (0 and 7 are Sunday) or its name."""
    word = text.lower()
    if word in _DAYS:
        return _DAYS.index(word)
    if not word.isdigit() or int(word) > 7:
        raise ValueError(f"{text!r} is not a day of the week (0-7 or sun-sat)")
    return int(word)


def _day_names(field: str) -> str:
    """A day-of-week field as the list of day names it means: ``1-5`` → ``mon,…,fri``,
    ``*/2`` → ``sun,tue,thu,sat`` (every other day counted from Sunday, as cron does)."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        body, slash, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else 0
        if slash and not step:
            raise ValueError(f"{part!r}: a step is a positive number")
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            first, _, last = body.partition("-")
            low, high = _day(first), _day(last)
        else:
            low = _day(body)
            high = 7 if slash else low  # cron's N/S: from N to the end, every S
        if low > high:
            raise ValueError(f"{part!r}: the range runs backwards")
        days.update(d % 7 for d in range(low, high + 1, step or 1))
    return ",".join(_DAYS[d] for d in sorted(days))


def cron_trigger(expression: str, timezone: tzinfo | str | None = None) -> CronTrigger:
    """The trigger of a five-field cron expression, weekdays counted as cron counts them;
    ValueError when it is not one."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"Wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_day_names(weekday),
        timezone=timezone,
    )
