"""The Bot API methods, with Telegram's error codes and wording."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bot.core.telegram_limits import (
    NOT_MODIFIED,
    Refused,
    bad_request,
    check_callback_answer,
    check_caption,
    check_photo,
    check_raw_text,
    check_reply_markup,
    check_text,
    image_size,
)

from .formatting import ParseError, parse_html
from .state import (
    DEFAULT_ALLOWED_UPDATES,
    JSON,
    CallbackAnswer,
    FakeChat,
    FakeMessage,
    FakePhoto,
    Revision,
    State,
)

# Every refusal is a ``bot.core.telegram_limits.Refused``: one shape for the server and the console.
ApiError = Refused
JSON_PARAMS = frozenset(
    {
        "reply_markup",
        "reply_parameters",
        "allowed_updates",
        "commands",
        "scope",
        "entities",
        "caption_entities",
        "link_preview_options",
        "message_ids",
    }
)


INT_PARAMS = frozenset(
    {
        "chat_id",
        "message_id",
        "offset",
        "limit",
        "timeout",
        "reply_to_message_id",
        "message_thread_id",
        "cache_time",
        "user_id",
        "max_connections",
    }
)
BOOL_PARAMS = frozenset(
    {
        "show_alert",
        "disable_notification",
        "protect_content",
        "drop_pending_updates",
        "allow_sending_without_reply",
        "disable_content_type_detection",
    }
)


class DropConnection(Exception):
    """Close the connection without answering."""


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes
    size: int


def decode_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Form values are strings and nested objects JSON strings (as PTB sends them): decode
    the nested objects and the well-known integer and boolean parameters."""
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            params[key] = value
        elif key in JSON_PARAMS:
            try:
                params[key] = json.loads(value)
            except ValueError as exc:
                raise bad_request(f"can't parse {key} JSON object") from exc
        elif key in INT_PARAMS and re.fullmatch(r"-?[0-9]+", value):
            params[key] = int(value)
        elif key in BOOL_PARAMS and value in ("true", "false"):
            params[key] = value == "true"
        else:
            params[key] = value
    return params


class Call:
    """One decoded request: typed accessors raise Telegram's 400s."""

    def __init__(self, state: State, params: dict[str, Any], uploads: list[Upload]) -> None:
        self.state = state
        self.params = params
        self.uploads = {u.field: u for u in uploads}

    def opt_int(self, name: str) -> int | None:
        value = self.params.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise bad_request(f"invalid {name} specified")
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise bad_request(f"invalid {name} specified") from exc

    def opt_float(self, name: str) -> float | None:
        value = self.params.get(name)
        if value is None or value == "":
            return None
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise bad_request(f"invalid {name} specified") from exc

    def opt_str(self, name: str) -> str | None:
        value = self.params.get(name)
        return None if value is None else str(value)

    def flag(self, name: str) -> bool:
        value = self.params.get(name)
        if isinstance(value, str):
            return value.lower() in ("true", "1")
        return bool(value)

    def chat(self) -> FakeChat:
        raw = self.params.get("chat_id")
        if raw is None or raw == "":
            raise bad_request("chat_id is empty")
        try:
            chat_id = int(raw)
        except (TypeError, ValueError) as exc:
            raise bad_request("chat not found") from exc
        chat = self.state.chats.get(chat_id)
        if chat is None:
            raise bad_request("chat not found")
        return chat

    def writable_chat(self) -> FakeChat:
        chat = self.chat()
        if chat.id in self.state.left:
            raise ApiError(403, "Forbidden: bot is not a member of the group chat")
        if chat.type == "private":
            if chat.id in self.state.blocked:
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            if chat.id in self.state.not_started:
                raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        return chat

    def message_id(self) -> int:
        if self.params.get("inline_message_id"):
            raise bad_request("inline messages are not supported by the fake server")
        message_id = self.opt_int("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        return message_id

    def formatted(self, text: str) -> tuple[str, list[JSON]]:
        mode = (self.opt_str("parse_mode") or "").lower()
        if mode == "html":
            try:
                return parse_html(text)
            except ParseError as exc:
                raise bad_request(f"can't parse entities: {exc}") from exc
        entities = self.params.get("entities") or self.params.get("caption_entities") or []
        return text, list(entities)

    def reply_markup(self, *, inline_only: bool = False) -> JSON | None:
        """The decoded reply_markup, checked as Telegram checks it (bot.core.telegram_limits)."""
        markup = self.params.get("reply_markup")
        if markup is None:
            return None
        check_reply_markup(markup, inline_only=inline_only)
        assert isinstance(markup, dict)
        return markup

    def upload(self, field: str) -> Upload | None:
        """The file sent in ``field``: uploaded under that name, or named ``attach://…``."""
        value = self.params.get(field)
        if isinstance(value, str) and value.startswith("attach://"):
            return self.uploads.get(value.removeprefix("attach://"))
        return self.uploads.get(field)

    def caption(self) -> tuple[str | None, list[JSON]]:
        """The caption and its entities, refused as Telegram refuses them (length, text)."""
        raw = self.opt_str("caption")
        if not raw:
            return None, []
        check_raw_text(raw, caption=True)
        caption, entities = self.formatted(raw)
        check_caption(caption)
        return caption, entities

    def reply_to(self, chat: FakeChat) -> FakeMessage | None:
        reply = self.params.get("reply_parameters")
        target_id: int | None
        allow_missing = False
        if isinstance(reply, dict):
            target_id = int(reply["message_id"]) if "message_id" in reply else None
            allow_missing = bool(reply.get("allow_sending_without_reply"))
            if reply.get("chat_id") not in (None, chat.id, str(chat.id)):
                raise bad_request("replies to other chats are not supported by the fake server")
        else:
            target_id = self.opt_int("reply_to_message_id")
            allow_missing = self.flag("allow_sending_without_reply")
        if target_id is None:
            return None
        target = self.state.find_message(chat.id, target_id)
        if target is None and not allow_missing:
            raise bad_request("message to be replied not found")
        return target


Method = Callable[[Call], Awaitable[Any]]
METHODS: dict[str, tuple[str, Method]] = {}


def method(name: str) -> Callable[[Method], Method]:
    def register(fn: Method) -> Method:
        METHODS[name.lower()] = (name, fn)
        return fn

    return register


def canonical_name(name: str) -> str | None:
    """Telegram's method names are case-insensitive."""
    entry = METHODS.get(name.lower())
    return entry[0] if entry else None


@method("getMe")
async def get_me(call: Call) -> JSON:
    data = call.state.bot.to_api()
    data.update(
        can_join_groups=True,
        can_read_all_group_messages=not call.state.privacy_mode,
        supports_inline_queries=False,
        can_connect_to_business=False,
        has_main_web_app=False,
    )
    return data


@method("getUpdates")
async def get_updates(call: Call) -> list[JSON]:
    state = call.state
    offset = call.opt_int("offset") or 0
    limit = min(max(call.opt_int("limit") or 100, 1), 100)
    timeout = max(call.opt_float("timeout") or 0.0, 0.0)
    allowed = call.params.get("allowed_updates")
    if isinstance(allowed, list):
        state.allowed_updates = frozenset(allowed) if allowed else DEFAULT_ALLOWED_UPDATES
    if state.webhook_url:
        raise ApiError(
            409,
            "Conflict: can't use getUpdates method while webhook is active; "
            "use deleteWebhook to delete the webhook first",
        )
    state.confirm(offset)

    def ready() -> bool:
        return bool(state.updates) or state.closed or state.offline

    if timeout > 0 and not ready():
        async with state.cond:
            try:
                async with asyncio.timeout(timeout):
                    await state.cond.wait_for(ready)
            except TimeoutError:
                pass
    if state.offline:
        raise DropConnection
    batch = state.updates[:limit]
    state.delivered_update_count += len(batch)
    return batch


WEBHOOK_PORTS = (80, 88, 443, 8443)
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


@method("setWebhook")
async def set_webhook(call: Call) -> bool:
    """Telegram's checks: an HTTPS URL on a webhook port, a secret of the allowed alphabet."""
    state = call.state
    url = call.opt_str("url")
    if url is None:
        raise bad_request("url is empty")
    if url:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if (parts.port or 443) not in WEBHOOK_PORTS:
            raise bad_request(
                "bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
            )
    secret = call.opt_str("secret_token")
    if secret is not None and not SECRET_TOKEN.fullmatch(secret):
        raise bad_request("secret token contains unallowed characters")
    connections = call.opt_int("max_connections")
    if connections is not None and not 1 <= connections <= 100:
        raise bad_request("bad webhook: max_connections must be between 1 and 100")
    allowed = call.params.get("allowed_updates")
    if isinstance(allowed, list):
        state.allowed_updates = frozenset(allowed) if allowed else DEFAULT_ALLOWED_UPDATES
    if call.flag("drop_pending_updates"):
        state.updates.clear()
    state.webhook_url = url
    state.webhook_secret = secret if url else None
    return True


@method("deleteWebhook")
async def delete_webhook(call: Call) -> bool:
    call.state.webhook_url = ""
    call.state.webhook_secret = None
    if call.flag("drop_pending_updates"):
        call.state.updates.clear()
    return True


@method("getWebhookInfo")
async def get_webhook_info(call: Call) -> JSON:
    pending = len(call.state.updates)
    return {
        "url": call.state.webhook_url,
        "has_custom_certificate": False,
        "pending_update_count": pending,
    }


def _commands_key(call: Call) -> tuple[str, str]:
    scope = call.params.get("scope") or {"type": "default"}
    return json.dumps(scope, sort_keys=True), call.opt_str("language_code") or ""


@method("setMyCommands")
async def set_my_commands(call: Call) -> bool:
    commands = call.params.get("commands")
    if not isinstance(commands, list):
        raise bad_request('parameter "commands" is required')
    for command in commands:
        name = str(command.get("command", ""))
        if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", ""))) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
    call.state.commands[_commands_key(call)] = commands
    call.state.bump()
    return True


@method("getMyCommands")
async def get_my_commands(call: Call) -> list[JSON]:
    return call.state.commands.get(_commands_key(call), [])


@method("deleteMyCommands")
async def delete_my_commands(call: Call) -> bool:
    call.state.commands.pop(_commands_key(call), None)
    call.state.bump()
    return True


@method("sendMessage")
async def send_message(call: Call) -> JSON:
    chat = call.writable_chat()
    raw = call.opt_str("text") or ""
    check_raw_text(raw)
    text, entities = call.formatted(raw)
    check_text(text)
    markup = call.reply_markup()
    reply_to = call.reply_to(chat)
    message = call.state.add_message(
        chat,
        call.state.bot,
        text=text,
        sent_text=raw,
        parse_mode=call.opt_str("parse_mode"),
        entities=entities,
        reply_markup=markup,
        reply_to=reply_to,
    )
    return message.to_api()


def _editable(call: Call) -> FakeMessage:
    chat = call.chat()
    message = call.state.find_message(chat.id, call.message_id())
    if message is None:
        raise bad_request("message to edit not found")
    if not message.from_bot:
        raise bad_request("message can't be edited")
    return message


def _apply_edit(call: Call, message: FakeMessage, text: str | None, markup: JSON | None) -> None:
    message.history.append(Revision(message.text, message.reply_markup, message.changed_seq))
    message.text = text
    message.reply_markup = markup
    message.edit_date = call.state.now()
    message.changed_seq = call.state.bump()


@method("editMessageText")
async def edit_message_text(call: Call) -> JSON:
    message = _editable(call)
    if message.text is None:
        raise bad_request("there is no text in the message to edit")
    raw = call.opt_str("text") or ""
    check_raw_text(raw)
    text, entities = call.formatted(raw)
    check_text(text)
    markup = call.reply_markup(inline_only=True)
    if text == message.text and markup == message.reply_markup and entities == message.entities:
        raise bad_request(NOT_MODIFIED)
    _apply_edit(call, message, text, markup)
    message.sent_text = raw
    message.entities = entities
    message.parse_mode = call.opt_str("parse_mode")
    return message.to_api()


@method("editMessageReplyMarkup")
async def edit_message_reply_markup(call: Call) -> JSON:
    message = _editable(call)
    markup = call.reply_markup(inline_only=True)
    if markup == message.reply_markup:
        raise bad_request(NOT_MODIFIED)
    _apply_edit(call, message, message.text, markup)
    return message.to_api()


def _delete(call: Call, chat: FakeChat, message_id: int) -> None:
    message = call.state.find_message(chat.id, message_id)
    if message is None:
        raise bad_request("message to delete not found")
    if chat.type != "private" and not message.from_bot and chat.id not in call.state.bot_admin_in:
        raise bad_request("message can't be deleted")
    message.deleted = True
    message.changed_seq = call.state.bump()


@method("deleteMessage")
async def delete_message(call: Call) -> bool:
    chat = call.chat()
    _delete(call, chat, call.message_id())
    return True


@method("deleteMessages")
async def delete_messages(call: Call) -> bool:
    chat = call.chat()
    ids = call.params.get("message_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
        raise bad_request("message_ids must be a list of 1-100 identifiers")
    for message_id in ids:
        message = call.state.find_message(chat.id, int(message_id))
        if message is not None:
            _delete(call, chat, int(message_id))
    return True


@method("answerCallbackQuery")
async def answer_callback_query(call: Call) -> bool:
    query_id = call.opt_str("callback_query_id") or ""
    state = call.state
    if query_id not in state.callback_queries or query_id in state.callback_answers:
        raise bad_request("query is too old and response timeout expired or query ID is invalid")
    text = call.opt_str("text")
    check_callback_answer(text)
    state.callback_answers[query_id] = CallbackAnswer(
        query_id=query_id,
        text=text,
        show_alert=call.flag("show_alert"),
        url=call.opt_str("url"),
        cache_time=call.opt_int("cache_time"),
        seq=state.bump(),
    )
    return True


@method("sendDocument")
async def send_document(call: Call) -> JSON:
    chat = call.writable_chat()
    state = call.state
    document = call.params.get("document")
    upload = call.upload("document")
    if upload is not None:
        mime = upload.content_type
        if not mime or mime == "application/octet-stream":
            mime = mimetypes.guess_type(upload.filename or "")[0] or "application/octet-stream"
        doc = state.new_file(upload.filename, mime, upload.data)
    elif isinstance(document, str) and document in state.documents:
        doc = state.documents[document]
    elif document:
        raise bad_request("wrong file identifier/HTTP URL specified")
    else:
        raise bad_request("there is no document in the request")
    caption, entities = call.caption()
    message = state.add_message(
        chat,
        state.bot,
        document=doc,
        caption=caption,
        entities=entities,
        parse_mode=call.opt_str("parse_mode"),
        reply_markup=call.reply_markup(),
        reply_to=call.reply_to(chat),
    )
    return message.to_api()


@method("sendPhoto")
async def send_photo(call: Call) -> JSON:
    """An uploaded photo, refused as Telegram refuses it (size, dimensions, caption)."""
    chat = call.writable_chat()
    state = call.state
    upload = call.upload("photo")
    if upload is None:
        if call.params.get("photo"):
            raise bad_request("wrong file identifier/HTTP URL specified")
        raise bad_request("there is no photo in the request")
    check_photo(upload.data)
    size = image_size(upload.data)
    assert size is not None  # check_photo refuses what it cannot read
    caption, entities = call.caption()
    file = state.new_file(upload.filename, upload.content_type, upload.data)
    message = state.add_message(
        chat,
        state.bot,
        photo=FakePhoto(file, *size),
        caption=caption,
        entities=entities,
        parse_mode=call.opt_str("parse_mode"),
        reply_markup=call.reply_markup(),
        reply_to=call.reply_to(chat),
    )
    return message.to_api()


@method("sendChatAction")
async def send_chat_action(call: Call) -> bool:
    chat = call.writable_chat()
    action = call.opt_str("action")
    if not action:
        raise bad_request("action is empty")
    call.state.chat_actions.append((chat.id, action))
    return True


@method("getChat")
async def get_chat(call: Call) -> JSON:
    chat = call.chat().to_api()
    chat.setdefault("accent_color_id", 0)
    chat.setdefault("max_reaction_count", 11)
    return chat


@method("getChatMember")
async def get_chat_member(call: Call) -> JSON:
    chat = call.chat()
    user_id = call.opt_int("user_id")
    if user_id is None:
        raise bad_request("user_id is empty")
    user = call.state.users.get(user_id)
    if user is None:
        raise bad_request("user not found")
    if chat.type == "private":
        status = "member" if chat.id == user_id else "left"
    else:
        status = "member" if user_id in call.state.members.get(chat.id, set()) else "left"
    return {"status": status, "user": user.to_api()}


@method("leaveChat")
async def leave_chat(call: Call) -> bool:
    chat = call.chat()
    if chat.type == "private":
        raise bad_request("chat member status can't be changed in private chats")
    call.state.left.add(chat.id)
    return True
