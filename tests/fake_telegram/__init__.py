"""A fake Telegram Bot API server for driving the real python-telegram-bot stack in tests.

The server is aiohttp.web on 127.0.0.1 and a free port, in the test's own event loop. It
speaks the Bot API over HTTP (form-encoded, multipart or JSON bodies; nested objects as JSON
strings), answers ``{"ok": true, "result": ...}`` or Telegram's error shape with Telegram's
status codes and wording, and checks the bot token (401 ``Unauthorized``).

Methods: getMe, getUpdates (long polling on an asyncio.Condition; ``offset`` confirms,
``limit``, ``timeout``, ``allowed_updates``), deleteWebhook, getWebhookInfo, setMyCommands,
getMyCommands, deleteMyCommands, sendMessage, editMessageText, editMessageReplyMarkup,
deleteMessage, deleteMessages, answerCallbackQuery, sendDocument, sendChatAction, getChat.
Anything else is 404 ``Not Found``. What Telegram refuses for a request's content (text
over 4096 characters or empty, caption over 1024, callback_data over 64 bytes, a markup other
than an inline keyboard on an edit, files over 50 MB as 413) is checked by
``bot.core.telegram_limits``, shared with the console (docs/telegram-limits.md); the server adds
what depends on state: identical edits (``message is not modified: ...``), unknown or deleted
messages (``message to edit not found``, ``message to delete not found``). ``parse_mode="HTML"``
strips tags into entities; bad markup is ``can't parse entities: ...``. Editing text
without ``reply_markup`` removes the inline keyboard, as on Telegram.

Usage::

    from telegram.ext import ApplicationBuilder
    from tests.fake_telegram import FakeTelegram

    async def test_start(fake_telegram: FakeTelegram) -> None:
        tg = fake_telegram
        app = ApplicationBuilder().token(tg.token).base_url(tg.base_url).build()
        ...  # add handlers
        async with app:
            await app.start()
            await app.updater.start_polling(poll_interval=0, timeout=1)
            try:
                alice = tg.user(1001, "alice")
                await tg.send_text(alice, "/start")
                reply = await tg.wait_for_message(alice, lambda m: "Welcome" in m.text)
                query_id = await tg.press_button(alice, reply, "Confirm")
                await tg.wait_for_callback_answer(query_id)
                done = await tg.wait_for_message(alice, lambda m: "Done" in m.text, edits=True)
            finally:
                await app.updater.stop()
                await app.stop()

The world: ``tg.user(id, username, first_name, started=True)`` (private chat id == user id),
``tg.group(-id, title, supergroup=False, bot_is_admin=True)``, ``tg.block(user)``.
Acting: ``send_text``, ``edit_text``, ``press``, ``press_button``. Reading back:
``messages_in``, ``bot_messages``, ``last_bot_message``, ``message``, ``is_deleted``,
``documents_in``, ``callback_answers``, ``commands``, ``chat_actions``, ``transcript``,
``requests`` / ``calls`` / ``count`` / ``call_counts`` (with ``request_mark()``).
Waiting (woken by every server change, never by sleeping): ``wait_until``,
``wait_for_message``, ``wait_for_callback_answer``, ``wait_for_request``.
Faults: ``tg.faults.retry_after / error / drop / delay(method=None, ..., times=1)``,
``tg.faults.clear()``, ``await tg.go_offline()`` / ``await tg.go_online()``.

In a conftest: ``pytest_plugins = ["tests.fake_telegram.fixtures"]`` gives the
``fake_telegram`` fixture.
"""

from .client import ChatRef, FakeTelegram, chat_id_of
from .faults import Fault, Faults
from .state import (
    CallbackAnswer,
    CallbackQuery,
    FakeChat,
    FakeDocument,
    FakeMessage,
    FakePhoto,
    FakeUser,
    RecordedRequest,
    Revision,
    UploadInfo,
)

__all__ = [
    "CallbackAnswer",
    "CallbackQuery",
    "ChatRef",
    "FakeChat",
    "FakeDocument",
    "FakeMessage",
    "FakePhoto",
    "FakeTelegram",
    "FakeUser",
    "Fault",
    "Faults",
    "RecordedRequest",
    "Revision",
    "UploadInfo",
    "chat_id_of",
]
