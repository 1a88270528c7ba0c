"""What Telegram's Bot API refuses for the content of a request, answered as Telegram answers.

One table for the fake Bot API of the tests and the console's in-process transport, so a
message Telegram would refuse is refused everywhere, with Telegram's HTTP status and
``description``, and python-telegram-bot raises the same exception it raises against
Telegram (``BadRequest("Message is too long")``). How each limit is counted, and where that
was confirmed, is in docs/telegram-limits.md. No telegram import: the shapes are plain JSON.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from typing import IO, Any

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_CALLBACK_ANSWER = 200
# Before parsing, the Bot API server refuses a text or caption over 32 KiB of UTF-8.
MAX_RAW_TEXT_BYTES = 1 << 15
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# sendPhoto: at most 10 MB, width + height at most 10000, the longer side at most 20 times
# the shorter (the Bot API's sendPhoto documentation).
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_SIDES = 10000
MAX_PHOTO_RATIO = 20
_PNG = b"\x89PNG\r\n\x1a\n"

NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
# Methods whose reply_markup may only be an inline keyboard.
INLINE_ONLY = frozenset(
    {
        "editmessagetext",
        "editmessagecaption",
        "editmessagemedia",
        "editmessagereplymarkup",
        "editmessagelivelocation",
        "stopmessagelivelocation",
        "stoppoll",
    }
)
_TEXT_METHODS = frozenset({"sendmessage", "editmessagetext"})
_CAPTION_METHODS = frozenset(
    {
        "senddocument",
        "sendphoto",
        "sendvideo",
        "sendaudio",
        "sendanimation",
        "sendvoice",
        "editmessagecaption",
    }
)
_TAG = re.compile(r"<[^<>]*>")


class Refused(Exception):
    """Telegram's error answer: ``{"ok": false, "error_code": status, "description": ...}``."""

    def __init__(self, status: int, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            wait = self.retry_after
            body["parameters"] = {"retry_after": int(wait) if wait == int(wait) else wait}
        return body

    def payload(self) -> bytes:
        """The HTTP body, as a ``BaseRequest.do_request`` returns it."""
        return json.dumps(self.body()).encode()


def bad_request(what: str) -> Refused:
    """400 with Telegram's prefix: ``bad_request("message is too long")``."""
    return Refused(400, f"Bad Request: {what}")


def text_length(text: str) -> int:
    """Telegram's length of a text or caption: Unicode code points of what is shown.

    Not UTF-16 code units (those are only the unit of entity offsets): an emoji counts one,
    so 4096 emoji are accepted. Leading and trailing spaces and newlines are trimmed first.
    """
    return len(text.strip(" \n"))


def visible_text(raw: str, parse_mode: str | None) -> str:
    """The text as shown, for counting: HTML tags dropped and entities decoded.

    A counting approximation for well-formed markup; the fake Bot API parses HTML strictly.
    """
    if (parse_mode or "").lower() != "html":
        return raw
    return html.unescape(_TAG.sub("", raw))


def check_raw_text(raw: str | None, *, caption: bool = False) -> None:
    """Before parsing: a message needs a text, and no text or caption may exceed 32 KiB."""
    if not raw:
        if caption:
            return
        raise bad_request("message text is empty")
    if len(raw.encode()) > MAX_RAW_TEXT_BYTES:
        raise bad_request("text is too long")


def check_text(shown: str) -> None:
    """After parsing: a message text is non-blank and at most 4096 characters."""
    if not shown.strip(" \n"):
        raise bad_request("text must be non-empty")
    if text_length(shown) > MAX_TEXT:
        raise bad_request("message is too long")


def check_caption(shown: str) -> None:
    if text_length(shown) > MAX_CAPTION:
        raise bad_request("message caption is too long")


def check_upload(size: int, limit: int = MAX_UPLOAD_BYTES) -> None:
    """Files up to 50 MB; past that the whole request is refused as HTTP 413, whatever the
    method (PTB raises ``NetworkError("Request Entity Too Large")``, not ``BadRequest``)."""
    if size > limit:
        raise Refused(413, "Request Entity Too Large")


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG (its IHDR) or a JPEG (its first SOF); None for neither."""
    if data.startswith(_PNG) and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return width, height
        at += 2 + length
    return None


def check_photo(data: bytes) -> None:
    """What sendPhoto refuses of an uploaded photo: over 10 MB (413, as any request Telegram
    will not take for its size), no image it can read, or dimensions out of bounds."""
    if len(data) > MAX_PHOTO_BYTES:
        raise Refused(413, "Request Entity Too Large")
    size = image_size(data)
    if size is None:
        raise bad_request("IMAGE_PROCESS_FAILED")
    width, height = size
    short, long = sorted(size)
    if short < 1 or width + height > MAX_PHOTO_SIDES or long > MAX_PHOTO_RATIO * short:
        raise bad_request("PHOTO_INVALID_DIMENSIONS")


def _button_error(what: str) -> Refused:
    return bad_request(f"can't parse inline keyboard button: {what}")


def _check_inline_button(button: object) -> None:
    if not isinstance(button, Mapping):
        raise _button_error("InlineKeyboardButton must be an Object")
    if "text" not in button:
        raise _button_error('Can\'t find field "text"')
    if not isinstance(button["text"], str | int | float):
        raise _button_error('Field "text" must be of type String')
    data = button.get("callback_data")
    actions = set(button) - {"text", "callback_data", "icon_custom_emoji_id", "style"}
    if data:
        if len(str(data).encode()) > MAX_CALLBACK_DATA:
            raise bad_request("BUTTON_DATA_INVALID")
    elif not actions:
        raise _button_error("Text buttons are unallowed in the inline keyboard")


def check_reply_markup(markup: object, *, inline_only: bool = False) -> None:
    """A reply_markup as the Bot API parses it; ``inline_only`` where only inline keyboards go."""
    if not isinstance(markup, Mapping):
        raise bad_request("object expected as reply markup")
    inline = markup.get("inline_keyboard")
    if inline is not None and not isinstance(inline, list):
        raise bad_request('field "inline_keyboard" must be of type Array')
    for row in inline or []:
        if not isinstance(row, list):
            raise bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        for button in row:
            _check_inline_button(button)
    if inline_only and not inline and _other_kind(markup):
        raise bad_request("inline keyboard expected")


def _other_kind(markup: Mapping[str, Any]) -> bool:
    """A reply keyboard, a keyboard removal or a forced reply (an empty markup is none)."""
    keys = ("keyboard", "remove_keyboard", "hide_keyboard", "force_reply", "force_reply_keyboard")
    return any(markup.get(key) for key in keys)


def check_request(method: str, params: Mapping[str, Any], file_sizes: Iterable[int] = ()) -> None:
    """Raise ``Refused`` when Telegram would refuse this request for what it carries.

    Only what the request itself shows (lengths, markup, sizes); what depends on the chat's
    state (a message to edit that does not exist, an identical edit) is the server's to say.
    """
    for size in file_sizes:
        check_upload(size)
    name = method.lower()
    parse_mode = params.get("parse_mode")
    mode = parse_mode if isinstance(parse_mode, str) else None
    if name in _TEXT_METHODS:
        text = str(params.get("text") or "")
        check_raw_text(text)
        check_text(visible_text(text, mode))
    if name in _CAPTION_METHODS and params.get("caption"):
        caption = str(params["caption"])
        check_raw_text(caption, caption=True)
        check_caption(visible_text(caption, mode))
    if name == "answercallbackquery":
        check_callback_answer(params.get("text"))
    markup = params.get("reply_markup")
    if isinstance(markup, str):
        try:
            markup = json.loads(markup)
        except ValueError as exc:
            raise bad_request("can't parse reply keyboard markup JSON object") from exc
    if markup is not None:
        check_reply_markup(markup, inline_only=name in INLINE_ONLY)


def upload_sizes(files: Mapping[str, tuple[object, bytes | IO[bytes], object]]) -> list[int]:
    """Sizes of a request's files, given as (name, content, mime type): bytes or a file handle."""
    sizes = []
    for _, content, _ in files.values():
        if isinstance(content, bytes):
            sizes.append(len(content))
        else:
            here = content.tell()
            sizes.append(content.seek(0, 2))
            content.seek(here)
    return sizes


def check_callback_answer(text: object) -> None:
    """The notification of an answered button press: at most 200 characters."""
    if text is not None and len(str(text)) > MAX_CALLBACK_ANSWER:
        raise bad_request("MESSAGE_TOO_LONG")
