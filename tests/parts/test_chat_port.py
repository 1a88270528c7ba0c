"""The chat port's promise: a failure to deliver is logged and reported, never raised —
whatever python-telegram-bot raises, not only its own ``TelegramError``s.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from telegram import Bot

from bot.chat.port import MessageRef
from handlers.plumbing.chat_port import TelegramChat

SECRET_TEXT = "hunter2 in the message text"


class _BrokenBot:
    """Every Bot API call fails as PTB did while parsing an answer (a KeyError)."""

    def __getattr__(self, name: str) -> Any:
        async def call(*args: object, **kwargs: object) -> None:
            raise KeyError(f"'result' missing while sending {SECRET_TEXT}")

        return call


async def test_unexpected_exceptions_from_ptb_are_logged_by_type_and_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chat = TelegramChat(cast(Bot, _BrokenBot()), retry_delays=())
    ref = MessageRef(42, 7)
    with caplog.at_level(logging.WARNING, logger="handlers.plumbing.chat_port"):
        assert await chat.post(42, SECRET_TEXT) is None
        assert await chat.edit(ref, SECRET_TEXT) is False
        assert await chat.delete(ref) is False
        assert await chat.send_file(42, "log.txt", b"data", caption=SECRET_TEXT) is False
        assert await chat.send_photo(42, b"\x89PNG", caption=SECRET_TEXT) is False
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5
    assert all("unexpected KeyError" in m for m in messages), messages
    assert not [m for m in messages if "hunter2" in m or "result" in m]
