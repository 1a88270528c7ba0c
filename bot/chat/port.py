"""The chat port: how the engine talks to people without knowing about Telegram.

The engine's flows (deploy, unlock, health, jobs) only see this protocol: post, edit,
delete, send a file or a picture. Waiting for answers is ``bot.chat.asker``'s job, on top of it.
``handlers`` implements the port with python-telegram-bot, and tests drive that real
implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Button:
    """An inline button; ``data`` is at most 64 bytes (Telegram's callback_data limit)."""

    label: str
    data: str

    def __post_init__(self) -> None:
        if len(self.data.encode()) > 64:
            raise ValueError(f"callback data longer than 64 bytes: {self.data[:20]!r}…")


@dataclass(frozen=True)
class MessageRef:
    """A message the bot sent, so it can be edited or deleted later."""

    chat_id: int
    message_id: int


Keyboard = Sequence[Sequence[Button]]


class ChatPort(Protocol):
    """What the engine may do in chats. Failures to deliver are logged, never raised."""

    async def post(
        self, chat_id: int, text: str, *, buttons: Keyboard = (), force_reply: bool = False
    ) -> MessageRef | None:
        """Send a message; None when it could not be delivered."""
        ...

    async def edit(self, ref: MessageRef, text: str, *, buttons: Keyboard = ()) -> bool:
        """Replace a message's text (an identical edit counts as success)."""
        ...

    async def delete(self, ref: MessageRef) -> bool: ...

    async def send_file(
        self, chat_id: int, filename: str, data: bytes, *, caption: str = ""
    ) -> bool: ...

    async def send_photo(self, chat_id: int, png: bytes, *, caption: str = "") -> bool:
        """Send a picture shown in the chat (within Telegram's photo limits,
        docs/telegram-limits.md); False when it could not be delivered."""
        ...
