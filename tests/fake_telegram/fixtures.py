"""The ``fake_telegram`` pytest fixture; register with ``pytest_plugins``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .client import FakeTelegram


@pytest_asyncio.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    """A started FakeTelegram on loopback, stopped at teardown (even when the test failed)."""
    tg = FakeTelegram()
    await tg.start()
    try:
        yield tg
    finally:
        await tg.stop()
