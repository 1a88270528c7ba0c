"""Small helpers every handler family uses."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from telegram import Message, Update, User


class NoSender(Exception):
    """An update without a message or user reached a handler that needs both."""


def sender(update: Update) -> tuple[Message, User]:
    """The message and its author; the gate lets nothing else reach command handlers."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        raise NoSender(f"update {update.update_id} has no message or user")
    return message, user


class Background:
    """Long work a handler starts and does not await; references kept until it ends.

    Not ``Application.create_task``: its tasks are awaited when the bot stops, and an
    unlock may wait for a passphrase for half an hour.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
