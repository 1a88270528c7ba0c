"""Work started and not awaited, with its tasks referenced until they end.

asyncio keeps only weak references to tasks: one nobody holds may vanish mid-way. Every
part that starts work in the background (a handler's unlock, a reboot offer, a reload on
SIGHUP) holds a :class:`Background` and stops or drains it when the bot stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    """A set of running tasks: spawned, counted, drained or cancelled together."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for every task to end by itself (their errors are theirs to report)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel every task and wait until each has ended."""
        for task in list(self._tasks):
            task.cancel()
        await self.drain()
