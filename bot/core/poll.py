"""Waiting for something to become true, with a deadline: the one loop every wait uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PollTimeout(TimeoutError, Generic[T]):
    """The deadline passed; ``last`` is what the final look returned."""

    def __init__(self, last: T, timeout: float) -> None:
        self.last = last
        self.timeout = timeout
        super().__init__(f"not done within {timeout:g} s")


async def poll_until(
    look: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float,
) -> T:
    """Call ``look`` every ``interval`` seconds until ``done`` accepts its result.

    The first look happens at once; the last one at or after the deadline, so a
    timeout always reports a fresh ``last``.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = await look()
        if done(found):
            return found
        if time.monotonic() >= deadline:
            raise PollTimeout(found, timeout)
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())) or interval)
