"""The Bot API transport, with nothing of an answer it cannot read in a log or an error.

PTB logs an answer that is not JSON in full, and puts an unreadable error answer into the
exception's message (docs/telegram.md, "Logs that leak"). A getUpdates answer holds what
people typed, a passphrase among it. Such an answer is told by its size only.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from telegram.error import TelegramError
from telegram.request import HTTPXRequest


def _unreadable(payload: bytes) -> str:
    return f"{len(payload)} bytes that are not JSON, not shown"


class QuietRequest(HTTPXRequest):
    """PTB's HTTPX transport; an answer that is not JSON is never logged or quoted."""

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, payload = await super().do_request(*args, **kwargs)
        if HTTPStatus.OK <= code < HTTPStatus.MULTIPLE_CHOICES:
            return code, payload
        try:
            json.loads(payload)
        except ValueError:
            # PTB would quote it in the error; an error answer of our own says the same.
            answer = {"ok": False, "error_code": code, "description": _unreadable(payload)}
            return code, json.dumps(answer).encode()
        return code, payload

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict[str, Any]:
        try:
            parsed: dict[str, Any] = json.loads(payload.decode("utf-8", "replace"))
        except ValueError:
            raise TelegramError(f"Invalid server response ({_unreadable(payload)})") from None
        return parsed
