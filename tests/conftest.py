"""Shared fixtures: the fake Bot API, the lab, and the bot under test (in this process, or
as a real ``deploybot run`` process)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.botprocess import BotProcess, kill_groups
from tests.botrig import BotRig
from tests.fake_telegram import FakeTelegram
from tests.lab.lab import Lab
from tests.people import ADMIN
from tests.world import World, make_world

pytest_plugins = ["tests.fake_telegram.fixtures", "tests.lab.fixtures"]

# PTB's RetryAfter warns about its future timedelta API unless this is set.
os.environ.setdefault("PTB_TIMEDELTA", "true")


@pytest_asyncio.fixture
async def rig(fake_telegram: FakeTelegram, tmp_path: Path) -> AsyncIterator[BotRig]:
    """A bot (not started yet: call ``await rig.start(inventory)``), stopped at teardown."""
    bot = BotRig(tg=fake_telegram, root=tmp_path, env={"DEPLOYBOT_ADMINS": str(ADMIN)})
    try:
        yield bot
    finally:
        await bot.stop()


@pytest_asyncio.fixture
async def world(rig: BotRig, lab: Lab, tmp_path: Path) -> World:
    """Lab hosts, sops secrets and a lab flake, with the bot configured to use them."""
    return make_world(lab, rig, tmp_path)


@pytest_asyncio.fixture
async def bot_process(world: World) -> AsyncIterator[BotProcess]:
    """``deploybot run`` as a process of its own (start it with ``await bot.start()``);
    stopped at teardown with whatever stand-ins it left, its output shown on failure."""
    bot = BotProcess(world.rig, world.root / "bot-output.log")
    try:
        yield bot
    finally:
        await bot.stop()
        kill_groups(world.stand_ins(living=True))
        if sys.exc_info()[0] is not None and bot.output.exists():
            print(bot.output.read_text(errors="replace")[-5000:])
