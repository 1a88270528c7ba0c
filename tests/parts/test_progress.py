"""The progress message: throttled edits, identical edits tolerated, the end always shown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from telegram import Bot

from bot.chat.port import MessageRef
from bot.jobs.progress import Progress, ProgressState
from handlers.plumbing.chat_port import TelegramChat
from tests.fake_telegram import FakeTelegram


@pytest_asyncio.fixture
async def chat(fake_telegram: FakeTelegram) -> AsyncIterator[TelegramChat]:
    bot = Bot(fake_telegram.token, base_url=fake_telegram.base_url)
    async with bot:
        yield TelegramChat(bot)


async def test_a_burst_of_output_costs_few_edits(
    fake_telegram: FakeTelegram, chat: TelegramChat
) -> None:
    tg = fake_telegram
    user = tg.user(77, "olive")
    progress = Progress(chat, user.id, ProgressState("Deploy web", ["one", "two"]), interval=60.0)
    ref = await progress.start()
    assert ref is not None
    progress.phase("one")
    for n in range(500):
        progress.line(f"building derivation {n}")
    progress.phase("two")
    await progress.finish("✅ done", outcome="succeeded")
    edits = tg.count("editMessageText")
    # One edit for the burst (then the 60 s throttle), one for the end: never one per line.
    assert edits <= 3
    final = tg.message(user, ref.message_id)
    assert final.body.startswith("Deploy web — succeeded after")
    assert "✅ one\n✅ two" in final.body
    assert final.body.endswith("✅ done")


async def test_identical_edit_counts_as_success(
    fake_telegram: FakeTelegram, chat: TelegramChat
) -> None:
    user = fake_telegram.user(78)
    ref = await chat.post(user.id, "same")
    assert ref is not None
    assert await chat.edit(ref, "same") is True
    assert await chat.edit(MessageRef(user.id, 9999), "gone") is False


async def test_texts_over_the_limit_are_cut_not_refused(
    fake_telegram: FakeTelegram, chat: TelegramChat
) -> None:
    user = fake_telegram.user(79)
    ref = await chat.post(user.id, "x" * 5000)
    assert ref is not None
    body = fake_telegram.message(user, ref.message_id).body
    assert len(body) <= 4096
    assert body.endswith("(cut)")
