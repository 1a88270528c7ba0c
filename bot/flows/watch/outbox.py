"""Alerts gathered for a short window, then one message per person.

When many machines fail together each person gets one summary instead of a storm.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from bot.chat.port import ChatPort


class Outbox:
    """Alerts gathered for ``window`` seconds, then one message per person."""

    def __init__(self, chat: ChatPort, window: float) -> None:
        self.chat = chat
        self.window = window
        self._pending: dict[int, list[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, people: Iterable[int], text: str) -> None:
        for person in people:
            self._pending.setdefault(person, []).append(text)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._later(), name="alert-outbox")

    async def _later(self) -> None:
        await asyncio.sleep(self.window)
        await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for person, texts in pending.items():
            if len(texts) == 1:
                await self.chat.post(person, texts[0])
            else:
                body = "\n".join(texts)
                await self.chat.post(person, f"📋 {len(texts)} alerts at once:\n{body}")

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])
        await self.flush()
