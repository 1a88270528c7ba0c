"""Shared fixtures: the fake Bot API, the lab, and the bot under test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.botrig import BotRig
from tests.fake_telegram import FakeTelegram

pytest_plugins = ["tests.fake_telegram.fixtures"]

ADMIN = 4242
OPERATOR = 1001
OTHER_OPERATOR = 2002
STRANGER = 6666


@pytest_asyncio.fixture
async def rig(fake_telegram: FakeTelegram, tmp_path: Path) -> AsyncIterator[BotRig]:
    """A bot (not started yet: call ``await rig.start(inventory)``), stopped at teardown."""
    bot = BotRig(tg=fake_telegram, root=tmp_path, env={"DEPLOYBOT_ADMINS": str(ADMIN)})
    try:
        yield bot
    finally:
        await bot.stop()
