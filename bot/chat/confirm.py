"""Confirmation buttons: a yes/no that only the asking user can answer, and that expires.

Callback data is ``cf:<token>:<choice>`` — a random token, so data forged or replayed from
another confirmation matches nothing, and under Telegram's 64-byte limit.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from enum import Enum

from bot.chat.port import Button

PREFIX = "cf"


class Press(Enum):
    """What a button press did, so the chat surface can answer the presser."""

    ACCEPTED = "accepted"
    NOT_YOURS = "not yours"
    EXPIRED = "expired"


@dataclass(eq=False)
class Confirmation:
    user_id: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    future: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def buttons(self, yes: str, no: str = "Cancel") -> list[list[Button]]:
        return [[Button(yes, f"{PREFIX}:{self.token}:y"), Button(no, f"{PREFIX}:{self.token}:n")]]


class Confirmations:
    """Open confirmations by token; answered or expired ones are forgotten."""

    def __init__(self) -> None:
        self._open: dict[str, Confirmation] = {}

    def open(self, user_id: int) -> Confirmation:
        confirmation = Confirmation(user_id=user_id)
        self._open[confirmation.token] = confirmation
        return confirmation

    def close(self, confirmation: Confirmation) -> None:
        self._open.pop(confirmation.token, None)
        if not confirmation.future.done():
            confirmation.future.cancel()

    def press(self, data: str, user_id: int) -> Press:
        """Apply a button press: only the user who asked can answer, and only once."""
        parts = data.split(":")
        if len(parts) != 3 or parts[0] != PREFIX or parts[2] not in ("y", "n"):
            return Press.EXPIRED
        confirmation = self._open.get(parts[1])
        if confirmation is None or confirmation.future.done():
            return Press.EXPIRED
        if confirmation.user_id != user_id:
            return Press.NOT_YOURS
        del self._open[confirmation.token]
        confirmation.future.set_result(parts[2] == "y")
        return Press.ACCEPTED

    async def wait(self, confirmation: Confirmation, timeout: float) -> bool | None:
        """True (yes), False (no), or None when it expired."""
        try:
            return await asyncio.wait_for(asyncio.shield(confirmation.future), timeout)
        except TimeoutError:
            return None
        finally:
            self.close(confirmation)
