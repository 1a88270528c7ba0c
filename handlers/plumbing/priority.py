"""The order updates are handled in: one at a time, in order, secret answers first.

python-telegram-bot handles updates strictly one after another by default
(``concurrent_updates=False``). That order matters (a confirmation before the next
command), but it also means a passphrase someone just typed waits behind every update
queued before it — a slow handler, a burst of commands (strangers never get this far
while polling: the door refuses them first, ``handlers/plumbing/door.py``). With this processor PTB
hands every update over at once (``max_concurrent_updates > 1``) and the processor keeps
them one at a time behind a FIFO lock, except a private text message from a user with an
open secret question: it is handled at once, beside whatever holds the lock, so it is
deleted and relayed before anything else queued. The gate still audits it, and routes it
to its question (``Gate._answers_a_secret``), so it cannot run a command either.

Handling a secret answer inside the gate alone would not do: the gate only runs when the
update's turn comes, behind everything queued before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import BaseUpdateProcessor

from bot.chat.answers import Answers

# PTB starts a task per update; they then wait here, in order. Only past this many waiting
# would a secret answer queue too (on PTB's semaphore).
MAX_IN_FLIGHT = 4096


class SecretsFirst(BaseUpdateProcessor):
    """One update at a time in arrival order, secret answers at once."""

    def __init__(self, answers: Answers) -> None:
        super().__init__(max_concurrent_updates=MAX_IN_FLIGHT)
        self.answers = answers
        self._turn = asyncio.Lock()

    def is_secret_answer(self, update: object) -> bool:
        if not isinstance(update, Update):
            return False
        message = update.message
        user = message.from_user if message is not None else None
        return (
            message is not None
            and user is not None
            and message.text is not None
            and message.chat.type == ChatType.PRIVATE
            and any(q.secret for q in self.answers.questions(user.id, message.chat.id))
        )

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        if self.is_secret_answer(update):
            await coroutine
            return
        async with self._turn:
            await coroutine

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None
