"""The door: strangers refused from a getUpdates batch before python-telegram-bot parses it.

PTB parses a whole batch and queues every update of it before it handles any
(docs/telegram.md, "Polling batches"). 60 strangers posting in a group just before a
passphrase cost that many parsed updates and handler runs, ahead of the passphrase and
then in the way of its relay (several times longer on a loaded machine). The door reads
each raw update once instead: one whose sender the bot does not know is refused there
(``handlers.plumbing.strangers``: counted, answered in the background) and never parsed or queued;
only the others go on. What it cannot read for certain goes on too, to the gate, which
refuses strangers the same way (webhook updates never pass the door).

PTB confirms a batch up to the last update it was given. When the door refused the last
one, an update with its id and nothing else takes its place, and the gate stops it.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from telegram import Bot

from handlers.plumbing.gate import Gate, clean_username, describe
from handlers.plumbing.request import QuietRequest
from handlers.plumbing.strangers import Visitor


def _object(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Door:
    """Refuses the strangers of a raw getUpdates batch and returns the rest to be parsed."""

    def __init__(self, gate: Gate, bot: Bot) -> None:
        self.gate = gate
        self.bot = bot

    def screen(self, payload: bytes) -> bytes:
        """A getUpdates answer without the strangers' updates (the same bytes if none)."""
        try:
            answer = json.loads(payload)
        except ValueError:
            return payload  # PTB says what is wrong with it
        batch = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(batch, list) or not batch:
            return payload
        last = _object(batch[-1])
        last_id = _int(last.get("update_id")) if last is not None else None
        if last_id is None:
            return payload
        kept = [raw for raw in batch if not self._refused(raw)]
        if len(kept) == len(batch):
            return payload
        if not kept or kept[-1] is not last:
            kept.append({"update_id": last_id})
        return json.dumps({**answer, "result": kept}).encode()

    def _refused(self, raw: object) -> bool:
        visitor = self._stranger(raw)
        if visitor is not None:
            self.gate.strangers.refuse(visitor)
        return visitor is not None

    def _stranger(self, raw: object) -> Visitor | None:
        """The stranger who sent this message or pressed this button; None for anything
        else, which the gate decides on."""
        update = _object(raw)
        if update is None:
            return None
        query = _object(update.get("callback_query"))
        message = _object(update.get("message") if query is None else query.get("message"))
        source = query if query is not None else message
        sender = _object(source.get("from")) if source is not None else None
        if sender is None or sender.get("is_bot") is not False:
            return None
        user_id = _int(sender.get("id"))
        if user_id is None or self.gate.access.is_known(user_id):
            return None
        button: str | None = None
        text: object = None
        if query is not None:
            data = query.get("data")
            button = data if isinstance(data, str) else ""
        elif message is not None:
            text = message.get("text")
        typed = text if isinstance(text, str) else None
        action, machine = describe(
            button=button,
            message=query is None,
            text=typed is not None,
            command=self.gate.read_command(typed, self.bot.username),
        )
        chat = _object(message.get("chat")) if message is not None else None
        username = sender.get("username")
        query_id = query.get("id") if query is not None else None
        return Visitor(
            user_id=user_id,
            username=clean_username(username if isinstance(username, str) else None),
            action=action,
            machine=machine,
            chat_id=_int(chat.get("id")) if chat is not None else None,
            private=chat is not None and chat.get("type") == "private",
            callback_query_id=query_id if isinstance(query_id, str) else None,
        )


class ScreenedUpdates(QuietRequest):
    """PTB's getUpdates request, with every batch passing the door before it is parsed."""

    def __init__(self) -> None:
        super().__init__(connection_pool_size=1)  # what PTB's builder gives getUpdates
        self.door: Door | None = None

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, payload = await super().do_request(*args, **kwargs)
        if self.door is None or code != HTTPStatus.OK:
            return code, payload
        return code, self.door.screen(payload)
