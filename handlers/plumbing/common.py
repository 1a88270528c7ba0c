"""Small helpers every handler family uses."""

from __future__ import annotations

from telegram import Message, Update, User


class NoSender(Exception):
    """An update without a message or user reached a handler that needs both."""


def sender(update: Update) -> tuple[Message, User]:
    """The message and its author; the gate lets nothing else reach command handlers."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        raise NoSender(f"update {update.update_id} has no message or user")
    return message, user
