"""The chat port of ``bot.chat`` implemented with python-telegram-bot."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from telegram import (
    Bot,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
)
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError, TimedOut

from bot.chat.port import Keyboard, MessageRef

log = logging.getLogger(__name__)
MAX_TEXT = 4096
MAX_CAPTION = 1024
# Pauses between attempts when Telegram answers 5xx or drops the connection: a short outage
# delays a job's messages instead of losing them.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
MAX_RETRY_AFTER = 60.0
T = TypeVar("T")


def _markup(buttons: Keyboard) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in buttons]
    )


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """Telegram refuses texts over 4096 characters; keep the head and say what was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 20] + "\n… (cut)"


def _retry_after_seconds(exc: RetryAfter) -> float:
    value = exc.retry_after
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


async def deliver(
    call: Callable[[], Awaitable[T]],
    *,
    repeatable: bool,
    delays: tuple[float, ...] = RETRY_DELAYS,
) -> T:
    """Call the Bot API, retrying what a later attempt can fix.

    429 waits as told; 5xx and dropped connections wait a little longer each time. A
    timeout is retried only when ``repeatable`` (an edit or delete): a timed-out send may
    have arrived, and sending it again would say it twice.
    """
    for delay in (*delays, None):
        try:
            return await call()
        except RetryAfter as exc:
            if delay is None:
                raise
            await asyncio.sleep(_retry_after_seconds(exc))
        except BadRequest:
            raise
        except TimedOut:
            if delay is None or not repeatable:
                raise
            await asyncio.sleep(delay)
        except NetworkError:
            if delay is None:
                raise
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


_FAILED = object()


class TelegramChat:
    """Delivers the engine's messages; a failure is logged and reported as None/False."""

    def __init__(self, bot: Bot, *, retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.bot = bot
        self.retry_delays = retry_delays

    async def _attempt(
        self, call: Callable[[], Awaitable[T]], *, repeatable: bool, what: str
    ) -> T | object:
        """``call`` through :func:`deliver`, or ``_FAILED`` when it could not be done.

        A Bot API refusal is logged with Telegram's reason. Any other exception (a parsing
        bug, a KeyError in an answer) is logged by type only, since its text may quote the
        message sent, and swallowed: the port promises that delivery never raises.
        """
        try:
            return await deliver(call, repeatable=repeatable, delays=self.retry_delays)
        except TelegramError as exc:
            if isinstance(exc, BadRequest) and "not modified" in str(exc).lower():
                return None  # an edit to the text the message already shows
            log.warning("could not %s: %s", what, exc)
        except Exception as exc:
            log.error("could not %s: unexpected %s", what, type(exc).__name__)
        return _FAILED

    async def post(
        self, chat_id: int, text: str, *, buttons: Keyboard = (), force_reply: bool = False
    ) -> MessageRef | None:
        markup: InlineKeyboardMarkup | ForceReply | None = _markup(buttons)
        if force_reply and markup is None:
            markup = ForceReply(selective=True)
        message = await self._attempt(
            lambda: self.bot.send_message(chat_id, clip(text), reply_markup=markup),
            repeatable=False,
            what=f"send a message to chat {chat_id}",
        )
        if not isinstance(message, Message):
            return None
        return MessageRef(chat_id, message.message_id)

    async def edit(self, ref: MessageRef, text: str, *, buttons: Keyboard = ()) -> bool:
        done = await self._attempt(
            lambda: self.bot.edit_message_text(
                clip(text),
                chat_id=ref.chat_id,
                message_id=ref.message_id,
                reply_markup=_markup(buttons),
            ),
            repeatable=True,
            what=f"edit message {ref.message_id} in chat {ref.chat_id}",
        )
        return done is not _FAILED

    async def delete(self, ref: MessageRef) -> bool:
        done = await self._attempt(
            lambda: self.bot.delete_message(ref.chat_id, ref.message_id),
            repeatable=True,
            what=f"delete message {ref.message_id} in chat {ref.chat_id}",
        )
        return done is True

    async def send_file(
        self, chat_id: int, filename: str, data: bytes, *, caption: str = ""
    ) -> bool:
        sent = await self._attempt(
            lambda: self.bot.send_document(
                chat_id,
                InputFile(data, filename=filename),
                caption=clip(caption, MAX_CAPTION) or None,
            ),
            repeatable=False,
            what=f"send {filename} to chat {chat_id}",
        )
        return sent is not _FAILED

    async def send_photo(self, chat_id: int, png: bytes, *, caption: str = "") -> bool:
        sent = await self._attempt(
            lambda: self.bot.send_photo(
                chat_id,
                InputFile(png, filename="report.png"),
                caption=clip(caption, MAX_CAPTION) or None,
            ),
            repeatable=False,
            what=f"send a picture to chat {chat_id}",
        )
        return sent is not _FAILED
