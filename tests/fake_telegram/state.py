"""Server-side state of the fake Bot API: users, chats, messages, updates, recorded calls."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]
ChatType = Literal["private", "group", "supergroup"]

DEFAULT_ALLOWED_UPDATES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "callback_query",
        "inline_query",
        "chosen_inline_result",
        "shipping_query",
        "pre_checkout_query",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
    }
)


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit of Telegram entity offsets."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class FakeUser:
    """A Telegram user. Its private chat with the bot has ``chat id == id``."""

    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = "en"
    is_bot: bool = False

    def to_api(self) -> JSON:
        data: JSON = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code and not self.is_bot:
            data["language_code"] = self.language_code
        return data


@dataclass(frozen=True)
class FakeChat:
    """A chat: the private chat of a user (positive id) or a group (negative id)."""

    id: int
    type: ChatType
    title: str | None = None
    first_name: str | None = None
    username: str | None = None

    def to_api(self) -> JSON:
        data: JSON = {"id": self.id, "type": self.type}
        if self.title is not None:
            data["title"] = self.title
        if self.first_name is not None:
            data["first_name"] = self.first_name
        if self.username is not None:
            data["username"] = self.username
        return data


@dataclass(frozen=True)
class FakeDocument:
    """A file the bot uploaded (or re-sent by file_id), with its bytes."""

    file_id: str
    file_unique_id: str
    file_name: str | None
    mime_type: str | None
    data: bytes

    @property
    def file_size(self) -> int:
        return len(self.data)

    def to_api(self) -> JSON:
        data: JSON = {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.file_size,
        }
        if self.file_name is not None:
            data["file_name"] = self.file_name
        if self.mime_type is not None:
            data["mime_type"] = self.mime_type
        return data


@dataclass(frozen=True)
class FakePhoto:
    """A photo the bot uploaded: its bytes and the dimensions the server read from them."""

    file: FakeDocument
    width: int
    height: int

    def to_api(self) -> list[JSON]:
        """The PhotoSize list of a message: here one size, the photo as sent."""
        return [
            {
                "file_id": self.file.file_id,
                "file_unique_id": self.file.file_unique_id,
                "file_size": self.file.file_size,
                "width": self.width,
                "height": self.height,
            }
        ]


@dataclass(frozen=True)
class Revision:
    """One past state of an edited message."""

    text: str | None
    reply_markup: JSON | None
    seq: int


@dataclass(eq=False)
class FakeMessage:
    """A message as the server stores it; the current state after any edits.

    ``text`` is what the user sees (HTML parse_mode applied: tags stripped, entities decoded);
    ``sent_text`` is the raw string the bot sent. ``seq`` and ``changed_seq`` are positions in
    the server's change sequence (see ``FakeTelegram.mark``).
    """

    chat: FakeChat
    message_id: int
    from_user: FakeUser
    date: int
    seq: int
    text: str | None = None
    sent_text: str | None = None
    parse_mode: str | None = None
    entities: list[JSON] = field(default_factory=list)
    caption: str | None = None
    reply_markup: JSON | None = None
    reply_to: FakeMessage | None = None
    document: FakeDocument | None = None
    photo: FakePhoto | None = None
    edit_date: int | None = None
    changed_seq: int = 0
    deleted: bool = False
    delivered: bool = True
    history: list[Revision] = field(default_factory=list)

    @property
    def chat_id(self) -> int:
        return self.chat.id

    @property
    def from_bot(self) -> bool:
        return self.from_user.is_bot

    @property
    def edited(self) -> bool:
        return bool(self.history)

    @property
    def body(self) -> str:
        """The text as shown (the caption for documents), never None."""
        return self.text or self.caption or ""

    @property
    def buttons(self) -> list[list[JSON]]:
        """Rows of the inline keyboard, or ``[]``."""
        if not self.reply_markup:
            return []
        rows: list[list[JSON]] = self.reply_markup.get("inline_keyboard", [])
        return rows

    def button_data(self, label: str) -> str:
        """The callback_data of the inline button whose text is ``label`` (or contains it)."""
        flat = [b for row in self.buttons for b in row if "callback_data" in b]
        for exact in (True, False):
            for button in flat:
                text = str(button.get("text", ""))
                if (text == label) if exact else (label in text):
                    return str(button["callback_data"])
        labels = [b.get("text") for b in flat]
        raise KeyError(f"no button {label!r} on message {self.message_id}; buttons: {labels}")

    def to_api(self, *, nested: bool = False) -> JSON:
        data: JSON = {
            "message_id": self.message_id,
            "from": self.from_user.to_api(),
            "chat": self.chat.to_api(),
            "date": self.date,
        }
        if self.edit_date is not None:
            data["edit_date"] = self.edit_date
        if self.reply_to is not None and not nested:
            data["reply_to_message"] = self.reply_to.to_api(nested=True)
        if self.text is not None:
            data["text"] = self.text
            if self.entities:
                data["entities"] = self.entities
        if self.document is not None:
            data["document"] = self.document.to_api()
        if self.photo is not None:
            data["photo"] = self.photo.to_api()
        if self.caption is not None:
            data["caption"] = self.caption
            if self.entities:
                data["caption_entities"] = self.entities
        if self.reply_markup is not None and "inline_keyboard" in self.reply_markup:
            data["reply_markup"] = self.reply_markup
        return data

    def describe(self) -> str:
        who = "bot" if self.from_bot else (self.from_user.username or str(self.from_user.id))
        if self.document is not None:
            body = f"[file {self.document.file_name}] {self.caption or ''}"
        elif self.photo is not None:
            body = f"[photo {self.photo.width}x{self.photo.height}] {self.caption or ''}"
        else:
            body = self.text or ""
        flags = "".join([" (edited)" if self.edited else "", " (deleted)" if self.deleted else ""])
        labels = [b.get("text") for row in self.buttons for b in row]
        keys = f" {labels}" if labels else ""
        return f"#{self.message_id} {who}: {body!r}{keys}{flags}"


@dataclass(frozen=True)
class CallbackQuery:
    """A button press injected by the test, and the bot's answer once it came."""

    id: str
    user: FakeUser
    message: FakeMessage
    data: str
    seq: int


@dataclass(frozen=True)
class CallbackAnswer:
    """What the bot passed to answerCallbackQuery."""

    query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int | None
    seq: int


@dataclass(frozen=True)
class UploadInfo:
    """A file part of a multipart request, as recorded (no bytes)."""

    field: str
    filename: str | None
    size: int


@dataclass
class RecordedRequest:
    """One HTTP call to the Bot API, recorded on arrival (never with the token).

    ``method`` is the canonical name (``sendMessage``); ``params`` are decoded (nested objects
    parsed, well-known ints and booleans converted, other values as sent); ``at`` is the
    event loop's clock. ``status`` is 0 until answered and stays 0 when no answer was sent;
    ``fault`` is ``retry_after``, ``error``, ``drop``, ``delay``, ``offline`` or ``cancelled``
    (the client went away, as PTB's updater does with its long poll on stop).
    """

    method: str
    params: JSON
    files: list[UploadInfo]
    at: float
    status: int = 0
    fault: str | None = None
    description: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


class State:
    """Everything the server knows. Mutations bump ``seq``; ``changed()`` wakes waiters."""

    def __init__(self, bot: FakeUser, *, privacy_mode: bool = True) -> None:
        self.bot = bot
        self.privacy_mode = privacy_mode
        self.max_document_bytes = 50 * 1024 * 1024
        self.cond = asyncio.Condition()
        self.seq = 0
        self.closed = False
        self.offline = False
        self.users: dict[int, FakeUser] = {}
        self.blocked: set[int] = set()
        self.not_started: set[int] = set()
        self.chats: dict[int, FakeChat] = {}
        self.bot_admin_in: set[int] = set()
        # Group id -> user ids who are members (everyone who wrote there is one); groups
        # the bot left.
        self.members: dict[int, set[int]] = {}
        self.left: set[int] = set()
        self.messages: dict[int, dict[int, FakeMessage]] = {}
        self._last_message_id: dict[int, int] = {}
        self.updates: list[JSON] = []
        self.delivered_update_count = 0
        self._update_ids = itertools.count(100_000)
        self.allowed_updates: frozenset[str] = DEFAULT_ALLOWED_UPDATES
        # setWebhook: while a URL is set, getUpdates is refused with 409 as Telegram does.
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.callback_queries: dict[str, CallbackQuery] = {}
        self.callback_answers: dict[str, CallbackAnswer] = {}
        self._query_ids = itertools.count(4_000_000_000_001, 7919)
        self.documents: dict[str, FakeDocument] = {}
        self._file_ids = itertools.count(1)
        self.requests: list[RecordedRequest] = []
        self.commands: dict[tuple[str, str], list[JSON]] = {}
        self.chat_actions: list[tuple[int, str]] = []

    def bump(self) -> int:
        self.seq += 1
        return self.seq

    async def changed(self) -> None:
        """Wake every waiter (long polls and test-side waits)."""
        async with self.cond:
            self.cond.notify_all()

    @staticmethod
    def now() -> int:
        return int(time.time())

    def add_message(self, chat: FakeChat, sender: FakeUser, **fields: Any) -> FakeMessage:
        if chat.id < 0 and not sender.is_bot:
            self.members.setdefault(chat.id, set()).add(sender.id)
        message_id = self._last_message_id.get(chat.id, 0) + 1
        self._last_message_id[chat.id] = message_id
        seq = self.bump()
        message = FakeMessage(
            chat=chat,
            message_id=message_id,
            from_user=sender,
            date=self.now(),
            seq=seq,
            changed_seq=seq,
            **fields,
        )
        self.messages.setdefault(chat.id, {})[message_id] = message
        return message

    def find_message(self, chat_id: int, message_id: int) -> FakeMessage | None:
        message = self.messages.get(chat_id, {}).get(message_id)
        return None if message is None or message.deleted else message

    def new_file(self, name: str | None, mime: str | None, data: bytes) -> FakeDocument:
        n = next(self._file_ids)
        doc = FakeDocument(
            file_id=f"BQACAgIAAxkDAAI{n:08d}fake",
            file_unique_id=f"AgAD{n:06d}",
            file_name=name,
            mime_type=mime,
            data=data,
        )
        self.documents[doc.file_id] = doc
        return doc

    def new_query_id(self) -> str:
        return str(next(self._query_ids))

    def enqueue(self, kind: str, payload: JSON) -> bool:
        """Queue an update unless the bot's allowed_updates exclude its kind."""
        self.bump()
        if kind not in self.allowed_updates:
            return False
        self.updates.append({"update_id": next(self._update_ids), kind: payload})
        return True

    def confirm(self, offset: int) -> None:
        """Drop confirmed updates like Telegram does for getUpdates' ``offset``."""
        if offset > 0:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        elif offset < 0:
            self.updates = self.updates[offset:]
