"""Console mode: the real Application and handlers, with the terminal as the only chat.

A ``BaseRequest`` answers the bot's Bot API calls in-process — no network — turning typed
lines into updates and printing what the bot sends, edits and deletes, much like Errbot's
text backend.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from telegram.request import BaseRequest, RequestData

from bot.core.telegram_limits import (
    Refused,
    check_photo,
    check_request,
    image_size,
    upload_sizes,
)

CONSOLE_TOKEN = "0:console"  # noqa: S105 - not a secret: the console never reaches Telegram
BOT_ID = 1_000_000_001
BUTTON_HINT = "(type [N] to press a button)"


class ConsoleBotApi(BaseRequest):
    """A one-chat Bot API: the console user talks privately with the bot."""

    def __init__(self, user_id: int, out: TextIO = sys.stdout, username: str = "console") -> None:
        self.user_id = user_id
        self.username = username
        self.out = out
        self._next_update = 1
        self._next_message = 1
        self._buttons: dict[int, tuple[int, str]] = {}
        self._texts: dict[int, str] = {}

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    @property
    def read_timeout(self) -> float | None:
        return 30.0

    # -- input -----------------------------------------------------------------------------

    def update_for(self, line: str) -> dict[str, Any] | None:
        """Turn one typed line into an update: a message, or a button press like ``[1]``."""
        text = line.rstrip("\n")
        stripped = text.strip()
        if not stripped:
            return None
        body: dict[str, Any]
        if stripped.startswith("[") and stripped.endswith("]") and stripped[1:-1].isdigit():
            pressed = self._buttons.get(int(stripped[1:-1]))
            if pressed is None:
                self._print(f"(no button {stripped} on screen)")
                return None
            message_id, data = pressed
            body = {"callback_query": self._callback(message_id, data)}
        else:
            body = {"message": self._user_message(text)}
        body["update_id"] = self._next_update
        self._next_update += 1
        return body

    def _user(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "is_bot": False,
            "first_name": "Console",
            "username": self.username,
        }

    def _chat(self) -> dict[str, Any]:
        return {"id": self.user_id, "type": "private", "first_name": "Console"}

    def _user_message(self, text: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": self._new_message_id(),
            "date": int(time.time()),
            "chat": self._chat(),
            "from": self._user(),
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
            ]
        return message

    def _callback(self, message_id: int, data: str) -> dict[str, Any]:
        return {
            "id": str(self._next_update),
            "from": self._user(),
            "chat_instance": "console",
            "data": data,
            "message": self._bot_message(message_id, self._texts.get(message_id, "")),
        }

    def _new_message_id(self) -> int:
        self._next_message += 1
        return self._next_message

    def _bot_message(self, message_id: int, text: str, **extra: Any) -> dict[str, Any]:
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(),
            "from": {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "deploybot",
                "username": "deploybot",
            },
            "text": text,
            **extra,
        }

    # -- the Bot API -----------------------------------------------------------------------

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        name = url.rsplit("/", 1)[-1]
        params: dict[str, Any] = dict(request_data.parameters) if request_data else {}
        try:  # what Telegram would refuse fails here too, as BadRequest
            files = request_data.multipart_data if request_data else {}
            check_request(name, params, upload_sizes(files))
            if name == "sendPhoto":
                photo = _uploaded(files, "photo")
                check_photo(photo)
                params["_size"] = image_size(photo)
        except Refused as refused:
            return refused.status, refused.payload()
        handler: Callable[[dict[str, Any]], Any] | None = getattr(self, f"_api_{name}", None)
        result: Any = True if handler is None else handler(params)
        return 200, json.dumps({"ok": True, "result": result}).encode()

    def _api_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "deploybot",
            "username": "deploybot",
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _api_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # updates are handed to the Application directly, one typed line at a time

    def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        message_id = self._new_message_id()
        text = str(params.get("text", ""))
        self._texts[message_id] = text
        self._print(text)
        self._show_buttons(message_id, params.get("reply_markup"))
        return self._bot_message(message_id, text)

    def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        message_id = int(params.get("message_id", 0))
        text = str(params.get("text", ""))
        before = self._texts.get(message_id, "").splitlines()
        self._texts[message_id] = text
        # An edited progress message: show its first line and what changed, not all of it.
        lines = text.splitlines()
        changed = [line for line in lines[1:] if line not in before]
        self._print("\n".join(lines[:1] + changed), prefix=f"(#{message_id}) ")
        self._show_buttons(message_id, params.get("reply_markup"))
        return self._bot_message(message_id, text)

    def _api_deleteMessage(self, params: dict[str, Any]) -> bool:
        message_id = int(params.get("message_id", 0))
        if message_id not in self._texts:
            self._print(f"(your message #{message_id} was deleted)")
        return True

    def _api_sendDocument(self, params: dict[str, Any]) -> dict[str, Any]:
        message_id = self._new_message_id()
        caption = str(params.get("caption") or "")
        self._print(f"(a file was sent) {caption}".rstrip())
        return self._bot_message(message_id, "")

    def _api_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any]:
        message_id = self._new_message_id()
        caption = str(params.get("caption") or "")
        width, height = params["_size"]
        self._print(f"(a picture was sent, {width}×{height}) {caption}".rstrip())
        sizes = [
            {"file_id": "console", "file_unique_id": "console", "width": width, "height": height}
        ]
        return self._bot_message(message_id, "", photo=sizes)

    def _api_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        if params.get("text"):
            self._print(f"({params['text']})")
        return True

    # -- output ----------------------------------------------------------------------------

    def _show_buttons(self, message_id: int, markup: Any) -> None:
        if isinstance(markup, str):
            markup = json.loads(markup)
        rows = (markup or {}).get("inline_keyboard") if isinstance(markup, dict) else None
        for number in [n for n, (mid, _) in self._buttons.items() if mid == message_id]:
            del self._buttons[number]
        if not rows:
            return
        labels = []
        for row in rows:
            for button in row:
                number = max(self._buttons, default=0) + 1
                self._buttons[number] = (message_id, str(button.get("callback_data", "")))
                labels.append(f"[{number}] {button.get('text', '')}")
        self._print("  ".join(labels) + f"  {BUTTON_HINT}")

    def _print(self, text: str, prefix: str = "") -> None:
        for index, line in enumerate(text.splitlines() or [""]):
            lead = "bot> " + prefix if index == 0 else "     "
            self.out.write(f"{lead}{line}\n")
        self.out.flush()


def _uploaded(files: dict[str, Any], field: str) -> bytes:
    """The bytes of the file sent as ``field`` (b"" when there is none)."""
    entry = files.get(field)
    if entry is None:
        return b""
    content = entry[1]
    if isinstance(content, bytes):
        return content
    here = content.tell()
    content.seek(0)
    data: bytes = content.read()
    content.seek(here)
    return data
