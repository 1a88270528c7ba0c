"""Durations as operators write them in the inventory: ``90s``, ``15m``, ``1h30m``, ``2d``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# A year: anything longer is a typo, and an infinite or huge value breaks the scheduler.
MAX_DURATION = 366 * 86400.0
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Return the number of seconds in ``text``; raise ValueError naming what is wrong.

    A bare number is not accepted: ``5`` could mean seconds or minutes, and guessing wrong
    makes a watcher probe sixty times too often.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty duration (write e.g. 60s, 15m, 1h)")
    total = 0.0
    position = 0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(value):
        raise ValueError(f"bad duration {text!r} (write e.g. 60s, 15m, 1h30m)")
    if total <= 0:
        raise ValueError(f"duration {text!r} must be more than zero")
    if not total <= MAX_DURATION:  # also catches inf and nan from very long digit strings
        raise ValueError(f"duration {text[:40]!r} is longer than a year")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds compactly for chat: ``4 s``, ``2 min 05 s``, ``1 h 03 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
