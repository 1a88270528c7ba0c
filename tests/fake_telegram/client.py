"""The test-side handle: start the server, play users, read back what the bot did."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from .faults import Faults
from .server import BotApiServer
from .state import (
    JSON,
    CallbackAnswer,
    CallbackQuery,
    FakeChat,
    FakeMessage,
    FakeUser,
    RecordedRequest,
    State,
    utf16_len,
)

ChatRef = int | FakeUser | FakeChat
_COMMAND = re.compile(r"(?:^|(?<=\s))/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{1,32})?")


def chat_id_of(ref: ChatRef) -> int:
    """A chat id from an id, a user (their private chat) or a chat."""
    return ref if isinstance(ref, int) else ref.id


class FakeTelegram:
    """A fake Bot API server for one bot, running in the current event loop.

    Use ``async with FakeTelegram() as tg`` (or ``await tg.start()`` / ``await tg.stop()``),
    then give the bot ``tg.token`` and ``tg.base_url``.
    """

    def __init__(
        self,
        *,
        bot_id: int = 7_000_000_001,
        bot_username: str = "deploybot_test_bot",
        bot_name: str = "DeployBot",
        privacy_mode: bool = True,
        max_document_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        self.token = f"{bot_id}:{secrets.token_urlsafe(32)[:35]}"
        self.bot_user = FakeUser(bot_id, bot_name, bot_username, is_bot=True, language_code=None)
        self.state = State(self.bot_user, privacy_mode=privacy_mode)
        self.state.max_document_bytes = max_document_bytes
        self.faults = Faults()
        self._server = BotApiServer(self.state, self.faults, self.token)
        self._last_action: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<FakeTelegram @{self.bot_user.username} port={self._server.port}>"

    # lifecycle

    async def start(self) -> FakeTelegram:
        await self._server.start()
        return self

    async def stop(self) -> None:
        """Wake every long poll and waiter, then close the server (in-flight calls ≤ 1 s)."""
        await self._server.stop()

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        """What the bot gets as TELEGRAM_API_URL; PTB appends the token."""
        if not self._server.port:
            raise RuntimeError("FakeTelegram is not started")
        return f"http://127.0.0.1:{self._server.port}/bot"

    # the world

    def user(
        self,
        id: int,
        username: str | None = None,
        first_name: str | None = None,
        *,
        last_name: str | None = None,
        language_code: str | None = None,
        started: bool | None = None,
    ) -> FakeUser:
        """The user ``id`` and their private chat with the bot, created on first use.

        Calling it again returns the same user, with any field given here changed.
        ``started=False``: the user never wrote to the bot, so messages to them fail with
        403 ``Forbidden: bot can't initiate conversation with a user`` until they send one.
        """
        if id <= 0:
            raise ValueError("user ids are positive")
        old = self.state.users.get(id)
        user = FakeUser(
            id,
            first_name or (old.first_name if old else None) or username or f"User{id}",
            username or (old.username if old else None),
            last_name or (old.last_name if old else None),
            language_code or (old.language_code if old else "en"),
        )
        self.state.users[id] = user
        self.state.chats[id] = FakeChat(
            id, "private", first_name=user.first_name, username=user.username
        )
        if started is False:
            self.state.not_started.add(id)
        elif started:
            self.state.not_started.discard(id)
        return user

    def group(
        self,
        id: int,
        title: str = "Ops",
        *,
        supergroup: bool = False,
        bot_is_admin: bool = True,
        members: Iterable[FakeUser] = (),
    ) -> FakeChat:
        """Create a group (negative id) the bot is a member of.

        With privacy mode on (the default) and ``bot_is_admin=False``, the bot only receives
        commands, replies to its messages and mentions; and it may delete only its own messages.
        """
        if id >= 0:
            raise ValueError("group ids are negative")
        chat = FakeChat(id, "supergroup" if supergroup else "group", title=title)
        self.state.chats[id] = chat
        self.state.members[id] = {m.id for m in members}
        if bot_is_admin:
            self.state.bot_admin_in.add(id)
        else:
            self.state.bot_admin_in.discard(id)
        return chat

    def has_left(self, chat: ChatRef) -> bool:
        """Whether the bot left this group (``leaveChat``)."""
        return chat_id_of(chat) in self.state.left

    def block(self, user: FakeUser, blocked: bool = True) -> None:
        """The user blocks the bot: sends to them fail with 403 until they write again."""
        if blocked:
            self.state.blocked.add(user.id)
        else:
            self.state.blocked.discard(user.id)

    # acting as users

    def _chat(self, user: FakeUser, chat: ChatRef | None) -> FakeChat:
        chat_id = user.id if chat is None else chat_id_of(chat)
        if chat_id not in self.state.chats:
            raise KeyError(f"unknown chat {chat_id}: create it with user() or group()")
        return self.state.chats[chat_id]

    def _addressed_to_bot(self, chat: FakeChat, message: FakeMessage) -> bool:
        state = self.state
        if chat.type == "private" or not state.privacy_mode or chat.id in state.bot_admin_in:
            return True
        text = message.text or ""
        me = f"@{self.bot_user.username}".lower()
        for entity in message.entities:
            if entity["type"] == "bot_command":
                command = text.encode("utf-16-le")[
                    2 * entity["offset"] : 2 * (entity["offset"] + entity["length"])
                ].decode("utf-16-le")
                if "@" not in command or command.lower().endswith(me):
                    return True
        replied = message.reply_to
        return (replied is not None and replied.from_bot) or me in text.lower()

    async def _inject(self, chat_id: int, kind: str, payload: JSON) -> bool:
        queued = self.state.enqueue(kind, payload)
        self._last_action[chat_id] = self.state.seq
        await self.state.changed()
        return queued

    async def send_text(
        self,
        user: FakeUser,
        text: str,
        chat: ChatRef | None = None,
        reply_to: FakeMessage | int | None = None,
    ) -> FakeMessage:
        """The user writes ``text`` (in their private chat unless ``chat`` is a group).

        Commands get ``bot_command`` entities like Telegram's (``/cmd`` and ``/cmd@bot``).
        In a group under privacy mode a message not meant for the bot is stored but not
        delivered (``message.delivered`` is False).
        """
        target = self._chat(user, chat)
        self.state.not_started.discard(user.id)
        self.state.blocked.discard(user.id)
        entities = [
            {
                "type": "bot_command",
                "offset": utf16_len(text[: m.start()]),
                "length": utf16_len(m.group(0)),
            }
            for m in _COMMAND.finditer(text)
        ]
        replied: FakeMessage | None = None
        if reply_to is not None:
            reply_id = reply_to if isinstance(reply_to, int) else reply_to.message_id
            replied = self.state.find_message(target.id, reply_id)
            if replied is None:
                raise KeyError(f"no message {reply_id} in chat {target.id}")
        message = self.state.add_message(
            target, user, text=text, sent_text=text, entities=entities, reply_to=replied
        )
        message.delivered = self._addressed_to_bot(target, message)
        if message.delivered:
            message.delivered = await self._inject(target.id, "message", message.to_api())
        else:
            self._last_action[target.id] = self.state.seq
            await self.state.changed()
        return message

    async def edit_text(self, message: FakeMessage, text: str) -> FakeMessage:
        """The author of a user message edits it; the bot gets an ``edited_message``."""
        if message.from_bot:
            raise ValueError("use the bot to edit its own messages")
        message.text = message.sent_text = text
        message.edit_date = self.state.now()
        message.changed_seq = self.state.bump()
        if message.delivered:
            await self._inject(message.chat_id, "edited_message", message.to_api())
        return message

    async def press(self, user: FakeUser, message: FakeMessage, data: str) -> str:
        """The user presses a button with ``data`` under ``message``; returns the query id.

        Any data and any message may be used, so forged presses can be tested. A deleted
        message arrives as an inaccessible message (``date`` 0) like Telegram sends it.
        """
        query_id = self.state.new_query_id()
        shown = message.to_api()
        if message.deleted:
            shown = {"chat": message.chat.to_api(), "message_id": message.message_id, "date": 0}
        payload: JSON = {
            "id": query_id,
            "from": user.to_api(),
            "message": shown,
            "chat_instance": f"{abs(message.chat_id) * 7919 + 17}",
            "data": data,
        }
        query = CallbackQuery(query_id, user, message, data, self.state.seq)
        self.state.callback_queries[query_id] = query
        await self._inject(message.chat_id, "callback_query", payload)
        return query_id

    async def press_button(self, user: FakeUser, message: FakeMessage, label: str) -> str:
        """Press the inline button labelled ``label`` (exact, else substring)."""
        return await self.press(user, message, message.button_data(label))

    # reading back

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP call in arrival order (method, decoded params, files, loop time, status)."""
        return self.state.requests

    def mark(self) -> int:
        """A position in the change sequence, for ``since=`` arguments."""
        return self.state.seq

    def request_mark(self) -> int:
        """A position in ``requests``, for ``count(since=...)`` and ``calls(since=...)``."""
        return len(self.state.requests)

    def calls(self, method: str | None = None, *, since: int = 0) -> list[RecordedRequest]:
        """Recorded calls of ``method`` (case-insensitive), all if None, from ``since``."""
        found = self.state.requests[since:]
        if method is None:
            return list(found)
        return [r for r in found if r.method.lower() == method.lower()]

    def count(self, method: str | None = None, *, since: int = 0) -> int:
        return len(self.calls(method, since=since))

    def call_counts(self, *, since: int = 0) -> Counter[str]:
        """Calls per method name, e.g. ``{"sendMessage": 3, "editMessageText": 12}``."""
        return Counter(r.method for r in self.state.requests[since:])

    def messages_in(self, chat: ChatRef, *, include_deleted: bool = False) -> list[FakeMessage]:
        """The chat's messages (users' and the bot's) in order, in their current state."""
        messages = self.state.messages.get(chat_id_of(chat), {}).values()
        return [m for m in messages if include_deleted or not m.deleted]

    def bot_messages(self, chat: ChatRef, *, include_deleted: bool = False) -> list[FakeMessage]:
        return [m for m in self.messages_in(chat, include_deleted=include_deleted) if m.from_bot]

    def last_bot_message(self, chat: ChatRef) -> FakeMessage | None:
        found = self.bot_messages(chat)
        return found[-1] if found else None

    def message(self, chat: ChatRef, message_id: int) -> FakeMessage:
        """A message by id, deleted or not (KeyError if it never existed)."""
        return self.state.messages[chat_id_of(chat)][message_id]

    def is_deleted(self, chat: ChatRef, message_id: int) -> bool:
        message = self.state.messages.get(chat_id_of(chat), {}).get(message_id)
        return message is not None and message.deleted

    def documents_in(self, chat: ChatRef | None = None) -> list[FakeMessage]:
        """Messages carrying a document (``m.document.data`` holds the bytes)."""
        chats = [chat_id_of(chat)] if chat is not None else list(self.state.messages)
        return [
            m
            for cid in chats
            for m in self.state.messages.get(cid, {}).values()
            if m.document is not None and m.from_bot
        ]

    def photos_in(self, chat: ChatRef) -> list[FakeMessage]:
        """The bot's photo messages in ``chat`` (``m.photo.file.data`` holds the bytes)."""
        return [m for m in self.bot_messages(chat) if m.photo is not None]

    @property
    def callback_answers(self) -> list[CallbackAnswer]:
        return sorted(self.state.callback_answers.values(), key=lambda a: a.seq)

    def callback_answer(self, query_id: str) -> CallbackAnswer | None:
        return self.state.callback_answers.get(query_id)

    def commands(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        """What setMyCommands stored for ``scope`` (default scope when None)."""
        key = json.dumps(scope or {"type": "default"}, sort_keys=True), language_code
        return list(self.state.commands.get(key, []))

    @property
    def chat_actions(self) -> list[tuple[int, str]]:
        return list(self.state.chat_actions)

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by the bot (0 once it polled past them)."""
        return len(self.state.updates)

    def transcript(self, chat: ChatRef) -> str:
        """The chat, one line per message, deleted ones included; for assertion messages."""
        lines = [m.describe() for m in self.messages_in(chat, include_deleted=True)]
        return "\n".join(lines) or "(empty)"

    # waiting

    async def notify(self) -> None:
        """Make every waiter re-check now (for state the server cannot see change)."""
        await self.state.changed()

    async def wait_until(
        self, predicate: Callable[[], Any], timeout: float = 10.0, *, what: str = ""
    ) -> None:
        """Return once ``predicate()`` is truthy; re-evaluated after every server change.

        Raises TimeoutError after ``timeout`` seconds. Server-side changes (every request
        and its answer, every injected update) and ``notify()`` wake the check; a polling bot
        makes one request per poll timeout at least, which bounds the lag for predicates on
        other state.
        """
        try:
            async with self.state.cond:
                async with asyncio.timeout(timeout):
                    await self.state.cond.wait_for(predicate)
        except TimeoutError:
            raise TimeoutError(f"waited {timeout}s for {what or predicate!r}") from None

    async def wait_for_message(
        self,
        chat: ChatRef,
        predicate: Callable[[FakeMessage], Any] | None = None,
        *,
        timeout: float = 10.0,
        edits: bool = False,
        since: int | None = None,
    ) -> FakeMessage:
        """The first bot message in ``chat`` (oldest first) that is new and matches.

        New means sent after ``since`` (a ``mark()``), or also edited after it when
        ``edits=True``. ``since`` defaults to the last thing the test did in that chat
        (send_text, press, edit_text), or the beginning if nothing. ``predicate`` sees the
        message's current state; deleted messages never match.
        """
        chat_id = chat_id_of(chat)
        start = self._last_action.get(chat_id, 0) if since is None else since
        found: list[FakeMessage] = []

        def check() -> bool:
            for message in self.bot_messages(chat_id):
                fresh = message.seq > start or (edits and message.changed_seq > start)
                if fresh and (predicate is None or predicate(message)):
                    found.append(message)
                    return True
            return False

        try:
            await self.wait_until(check, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no new bot message in chat {chat_id} matched within {timeout}s "
                f"(since={start}, edits={edits}); chat:\n{self.transcript(chat_id)}"
            ) from None
        return found[0]

    async def wait_for_callback_answer(
        self, query_id: str, timeout: float = 10.0
    ) -> CallbackAnswer:
        await self.wait_until(
            lambda: query_id in self.state.callback_answers,
            timeout,
            what=f"answerCallbackQuery({query_id})",
        )
        return self.state.callback_answers[query_id]

    async def wait_for_request(
        self,
        method: str,
        predicate: Callable[[RecordedRequest], Any] | None = None,
        *,
        timeout: float = 10.0,
        since: int | None = None,
    ) -> RecordedRequest:
        """The first finished call of ``method`` from ``since`` (a ``request_mark()``,
        default now) that matches ``predicate``."""
        start = self.request_mark() if since is None else since
        found: list[RecordedRequest] = []

        def check() -> bool:
            for request in self.calls(method, since=start):
                if request.status and (predicate is None or predicate(request)):
                    found.append(request)
                    return True
            return False

        await self.wait_until(check, timeout, what=f"a {method} call")
        return found[0]

    # faults

    async def go_offline(self) -> None:
        """Drop every call (and pending long polls) without answering until go_online()."""
        self.state.offline = True
        await self.state.changed()

    async def go_online(self) -> None:
        self.state.offline = False
        await self.state.changed()
