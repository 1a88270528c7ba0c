"""The fake Bot API server, driven by the real python-telegram-bot Application over HTTP."""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.fake_telegram import FakeTelegram, FakeUser, fixtures
from tests.fake_telegram.formatting import ParseError, parse_html

fake_telegram = fixtures.fake_telegram

App = Application[Any, Any, Any, Any, Any, Any]


@pytest.fixture
def tg(fake_telegram: FakeTelegram) -> FakeTelegram:
    return fake_telegram


@pytest.fixture
def alice(tg: FakeTelegram) -> FakeUser:
    return tg.user(1001, "alice", "Alice")


class Recorder:
    """What the handlers saw, for assertions."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.not_modified: list[str] = []


def build_app(tg: FakeTelegram, *, rate_limiter: bool = False) -> tuple[App, Recorder]:
    builder = ApplicationBuilder().token(tg.token).base_url(tg.base_url)
    app: App = (
        builder.rate_limiter(AIORateLimiter(max_retries=3)).build()
        if rate_limiter
        else builder.build()
    )
    seen = Recorder()

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        text = " ".join(context.args or []) or "(nothing)"
        await update.effective_message.reply_text(text, do_quote=True)

    async def ask(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        keyboard = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("Yes", callback_data="yes"),
                    InlineKeyboardButton("No", callback_data="no"),
                ]
            ]
        )
        await update.effective_message.reply_text("Proceed?", reply_markup=keyboard)

    async def choice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer(f"got {query.data}", show_alert=query.data == "no")
        await query.edit_message_text(f"Working on {query.data}")
        try:
            await query.edit_message_text(f"Working on {query.data}")
        except BadRequest as exc:
            seen.not_modified.append(str(exc))
        await query.edit_message_text(f"Done: {query.data}")

    async def secret(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        await message.delete()
        await message.chat.send_message("Deleted your message.")

    async def log(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await update.effective_chat.send_action("upload_document")
        await update.effective_chat.send_document(
            b"line 1\nline 2\n", filename="job-7.log", caption="Full log"
        )

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert context.error is not None
        seen.errors.append(context.error)
        await tg.notify()

    app.add_handler(CommandHandler("echo", echo))
    app.add_handler(CommandHandler("ask", ask))
    app.add_handler(CommandHandler("log", log))
    app.add_handler(CallbackQueryHandler(choice))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, secret))
    app.add_error_handler(on_error)
    return app, seen


@asynccontextmanager
async def running(app: App) -> AsyncIterator[App]:
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        try:
            yield app
        finally:
            async with asyncio.timeout(5):
                await app.updater.stop()
                await app.stop()


@pytest.fixture
async def bot_app(tg: FakeTelegram) -> AsyncIterator[Recorder]:
    app, seen = build_app(tg)
    async with running(app):
        yield seen


async def test_command_echo_through_ptb(
    tg: FakeTelegram, alice: FakeUser, bot_app: Recorder
) -> None:
    sent = await tg.send_text(alice, "/echo hello world")
    assert sent.entities == [{"type": "bot_command", "offset": 0, "length": 5}]
    reply = await tg.wait_for_message(alice)
    assert reply.text == "hello world"
    assert reply.reply_to is sent
    assert reply.from_user == tg.bot_user
    assert reply.chat.id == alice.id
    assert reply.chat.type == "private"
    await tg.wait_until(lambda: tg.pending_updates == 0, what="update confirmed")
    assert tg.count("getMe") == 1
    assert tg.count("sendMessage") == 1
    assert tg.count("deleteWebhook") == 1
    assert tg.state.delivered_update_count == 1
    assert not bot_app.errors


async def test_buttons_callback_and_edits(
    tg: FakeTelegram, alice: FakeUser, bot_app: Recorder
) -> None:
    await tg.send_text(alice, "/ask")
    prompt = await tg.wait_for_message(alice, lambda m: m.text == "Proceed?")
    assert [b["text"] for b in prompt.buttons[0]] == ["Yes", "No"]
    query_id = await tg.press_button(alice, prompt, "Yes")
    answer = await tg.wait_for_callback_answer(query_id)
    assert (answer.text, answer.show_alert) == ("got yes", False)
    done = await tg.wait_for_message(alice, lambda m: m.text == "Done: yes", edits=True)
    assert done is prompt
    assert [r.text for r in done.history] == ["Proceed?", "Working on yes"]
    assert done.reply_markup is None, "editing text without reply_markup drops the keyboard"
    assert len(bot_app.not_modified) == 1
    assert bot_app.not_modified[0].startswith("Message is not modified")
    assert tg.count("editMessageText") == 3
    assert [r.status for r in tg.calls("editMessageText")] == [200, 400, 200]


async def test_forged_press_on_another_users_message(
    tg: FakeTelegram, alice: FakeUser, bot_app: Recorder
) -> None:
    mallory = tg.user(666, "mallory")
    assert tg.user(666) == mallory
    assert tg.user(1001).username == "alice"
    await tg.send_text(alice, "/ask")
    prompt = await tg.wait_for_message(alice)
    query_id = await tg.press(mallory, prompt, "no")
    answer = await tg.wait_for_callback_answer(query_id)
    assert answer.show_alert
    assert tg.state.callback_queries[query_id].user == mallory


async def test_delete_users_message_and_send_document(
    tg: FakeTelegram, alice: FakeUser, bot_app: Recorder
) -> None:
    secret = await tg.send_text(alice, "correct horse battery staple")
    await tg.wait_for_message(alice, lambda m: m.text == "Deleted your message.")
    assert tg.is_deleted(alice, secret.message_id)
    assert secret not in tg.messages_in(alice)
    await tg.send_text(alice, "/log")
    sent = await tg.wait_for_message(alice, lambda m: m.document is not None)
    assert sent.document is not None
    assert sent.document.file_name == "job-7.log"
    assert sent.document.data == b"line 1\nline 2\n"
    assert sent.caption == "Full log"
    assert (alice.id, "upload_document") in tg.chat_actions
    assert tg.documents_in(alice) == [sent]
    upload = tg.calls("sendDocument")[0]
    assert upload.files[0].filename == "job-7.log"
    assert "document" not in str(upload.params.get("document", ""))


async def test_group_commands_and_privacy_mode(tg: FakeTelegram, alice: FakeUser) -> None:
    ops = tg.group(-100200, "Ops", bot_is_admin=False)
    app, seen = build_app(tg)
    async with running(app):
        chatter = await tg.send_text(alice, "hello everyone", chat=ops)
        assert not chatter.delivered
        other = await tg.send_text(alice, "/echo@some_other_bot x", chat=ops)
        assert not other.delivered
        await tg.send_text(alice, "/echo@deploybot_test_bot hi group", chat=ops)
        reply = await tg.wait_for_message(ops)
        assert reply.text == "hi group"
        assert reply.chat.type == "group"
        assert reply.chat.id == -100200
    assert not seen.errors


async def test_retry_after_is_honoured_by_the_rate_limiter(
    tg: FakeTelegram, alice: FakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    app, seen = build_app(tg, rate_limiter=True)
    tg.faults.retry_after("sendMessage", seconds=1, times=1)
    async with running(app):
        await tg.send_text(alice, "/echo after the flood")
        reply = await tg.wait_for_message(alice, timeout=5)
    assert reply.text == "after the flood"
    attempts = tg.calls("sendMessage")
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0
    assert not seen.errors


async def test_retry_after_reaches_a_bot_without_rate_limiter(
    tg: FakeTelegram, alice: FakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    tg.faults.retry_after("sendMessage", seconds=3)
    app, seen = build_app(tg)
    async with running(app):
        await tg.send_text(alice, "/echo x")
        await tg.wait_until(lambda: seen.errors, what="the handler's error")
    assert isinstance(seen.errors[0], RetryAfter)
    raw = tg.calls("sendMessage")[0]
    assert (raw.status, raw.fault) == (429, "retry_after")


async def test_dropped_connection_and_offline_recovery(tg: FakeTelegram, alice: FakeUser) -> None:
    app, seen = build_app(tg)
    async with running(app):
        tg.faults.drop("sendMessage")
        await tg.send_text(alice, "/echo lost")
        await tg.wait_until(lambda: seen.errors, what="the dropped send")
        assert isinstance(seen.errors[0], NetworkError)
        await tg.send_text(alice, "/echo kept")
        assert (await tg.wait_for_message(alice)).text == "kept"

        await tg.go_offline()
        await tg.wait_until(
            lambda: any(r.fault == "offline" for r in tg.calls("getUpdates")),
            what="a refused poll",
        )
        await tg.send_text(alice, "/echo back online")
        await tg.go_online()
        assert (await tg.wait_for_message(alice, timeout=5)).text == "back online"


async def test_server_errors_and_delays(tg: FakeTelegram, alice: FakeUser) -> None:
    bot = ApplicationBuilder().token(tg.token).base_url(tg.base_url).build().bot
    async with bot:
        tg.faults.error("sendMessage", status=500, times=2)
        for _ in range(2):
            with pytest.raises(NetworkError, match="Internal Server Error"):
                await bot.send_message(alice.id, "x")
        assert (await bot.send_message(alice.id, "third time")).message_id == 1
        rule = tg.faults.delay("getMe", seconds=0.2, times=1)
        started = asyncio.get_running_loop().time()
        await bot.get_me()
        assert asyncio.get_running_loop().time() - started >= 0.2
        assert rule.hits == 1
        tg.faults.error(status=403, description="Forbidden: bot was kicked", where=lambda p: True)
        with pytest.raises(Forbidden):
            await bot.send_chat_action(alice.id, "typing")


async def test_wrong_token_is_unauthorized(tg: FakeTelegram) -> None:
    wrong = tg.token.split(":")[0] + ":" + "A" * 35
    bot = ApplicationBuilder().token(wrong).base_url(tg.base_url).build().bot
    with pytest.raises(InvalidToken):
        async with bot:
            pass
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{tg.base_url}{wrong}/getMe")
        malformed = await http.post(f"{tg.base_url}nonsense/getMe")
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert malformed.status_code == 404
    assert all(tg.token not in repr(r) for r in tg.requests)
    assert tg.token not in repr(tg)


async def test_message_length_limit_and_html(tg: FakeTelegram, alice: FakeUser) -> None:
    bot = ApplicationBuilder().token(tg.token).base_url(tg.base_url).build().bot
    async with bot:
        longest = await bot.send_message(alice.id, "é" * 4096)
        assert longest.text == "é" * 4096
        with pytest.raises(BadRequest, match="Message is too long"):
            await bot.send_message(alice.id, "x" * 4097)
        shown = await bot.send_message(alice.id, "<b>ok</b> 1 &lt; 2", parse_mode="HTML")
        assert shown.text == "ok 1 < 2"
        assert tg.message(alice, shown.message_id).sent_text == "<b>ok</b> 1 &lt; 2"
        with pytest.raises(BadRequest, match="Can't parse entities"):
            await bot.send_message(alice.id, "exit <code> 1 < 2", parse_mode="HTML")
        with pytest.raises(BadRequest, match="Button_data_invalid"):
            await bot.send_message(
                alice.id,
                "x",
                reply_markup=InlineKeyboardMarkup(
                    [[InlineKeyboardButton("long", callback_data="d" * 65)]]
                ),
            )
    assert [m.message_id for m in tg.bot_messages(alice)] == [1, 2]


async def test_edit_and_delete_errors(tg: FakeTelegram, alice: FakeUser) -> None:
    bot = ApplicationBuilder().token(tg.token).base_url(tg.base_url).build().bot
    async with bot:
        sent = await bot.send_message(alice.id, "one")
        with pytest.raises(BadRequest, match="Message to edit not found"):
            await bot.edit_message_text("x", chat_id=alice.id, message_id=99)
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("A", callback_data="a")]])
        await bot.edit_message_reply_markup(alice.id, sent.message_id, reply_markup=keyboard)
        with pytest.raises(BadRequest, match="Message is not modified"):
            await bot.edit_message_reply_markup(alice.id, sent.message_id, reply_markup=keyboard)
        assert await bot.delete_message(alice.id, sent.message_id)
        with pytest.raises(BadRequest, match="Message to delete not found"):
            await bot.delete_message(alice.id, sent.message_id)
        with pytest.raises(BadRequest, match="Message to edit not found"):
            await bot.edit_message_text("x", chat_id=alice.id, message_id=sent.message_id)
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.send_message(424242, "nobody")
        shy = tg.user(1002, "shy", started=False)
        with pytest.raises(Forbidden, match="initiate conversation"):
            await bot.send_message(shy.id, "hi")
        tg.block(alice)
        with pytest.raises(Forbidden, match="blocked"):
            await bot.send_message(alice.id, "hi")
    assert tg.is_deleted(alice, sent.message_id)
    assert not tg.is_deleted(alice, 99)


async def test_set_webhook_as_telegram_checks_it(tg: FakeTelegram) -> None:
    bot = ApplicationBuilder().token(tg.token).base_url(tg.base_url).build().bot
    async with bot:
        with pytest.raises(BadRequest, match=r"(?i)an https url must be provided"):
            await bot.set_webhook("http://bot.example.org/hook")
        with pytest.raises(BadRequest, match=r"(?i)only on ports 80, 88, 443 or 8443"):
            await bot.set_webhook("https://bot.example.org:9000/hook")
        with pytest.raises(BadRequest, match=r"(?i)secret token contains unallowed characters"):
            await bot.set_webhook("https://bot.example.org/hook", secret_token="no spaces")
        assert tg.state.webhook_url == ""
        assert await bot.set_webhook("https://bot.example.org/hook", secret_token="s3cr-t_")
        assert (await bot.get_webhook_info()).url == "https://bot.example.org/hook"
        assert tg.state.webhook_secret == "s3cr-t_"
        with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
            await bot.get_updates()
        assert await bot.delete_webhook()
        assert (await bot.get_webhook_info()).url == ""
        assert tg.state.webhook_secret is None
        assert await bot.get_updates() == ()


async def test_document_limits(alice: FakeUser, tg: FakeTelegram) -> None:
    tg.state.max_document_bytes = 1000
    bot = ApplicationBuilder().token(tg.token).base_url(tg.base_url).build().bot
    async with bot:
        small = await bot.send_document(alice.id, b"a" * 1000, filename="ok.txt")
        assert small.document is not None
        assert small.document.file_size == 1000
        assert small.document.mime_type == "text/plain"
        with pytest.raises(NetworkError, match="Request Entity Too Large"):
            await bot.send_document(alice.id, b"a" * 1001, filename="big.bin")
        again = await bot.send_document(alice.id, small.document.file_id)
        assert again.document is not None
        assert again.document.file_unique_id == small.document.file_unique_id


async def test_raw_protocol_json_bodies_and_long_polling(tg: FakeTelegram, alice: FakeUser) -> None:
    base = f"{tg.base_url}{tg.token}"
    async with httpx.AsyncClient(timeout=10) as http:
        unknown = await http.post(f"{base}/sendSticker", json={"chat_id": alice.id})
        assert (unknown.status_code, unknown.json()["description"]) == (404, "Not Found")
        sent = await http.post(f"{base}/SENDMESSAGE", json={"chat_id": alice.id, "text": "hi"})
        assert sent.json()["result"]["text"] == "hi"

        poll = asyncio.create_task(http.get(f"{base}/getUpdates", params={"timeout": 5}))
        await tg.wait_until(lambda: tg.count("getUpdates") == 1)
        await tg.send_text(alice, "/start")
        first = (await poll).json()["result"]
        assert [u["message"]["text"] for u in first] == ["/start"]

        await tg.send_text(alice, "two")
        await tg.send_text(alice, "three")
        limited = (await http.post(f"{base}/getUpdates", data={"limit": "1"})).json()["result"]
        assert [u["update_id"] for u in limited] == [first[0]["update_id"]]
        next_offset = first[0]["update_id"] + 1
        rest = await http.post(f"{base}/getUpdates", data={"offset": str(next_offset)})
        assert [u["message"]["text"] for u in rest.json()["result"]] == ["two", "three"]
        assert tg.pending_updates == 2

        only_callbacks = {"allowed_updates": '["callback_query"]', "offset": "-1"}
        await http.post(f"{base}/getUpdates", data=only_callbacks)
        assert tg.pending_updates == 1
        ignored = await tg.send_text(alice, "ignored")
        assert not ignored.delivered
        assert tg.pending_updates == 1


async def test_wait_for_message_semantics(tg: FakeTelegram, alice: FakeUser) -> None:
    bot = ApplicationBuilder().token(tg.token).base_url(tg.base_url).build().bot
    async with bot:
        old = await bot.send_message(alice.id, "Step 1")
        mark = tg.mark()
        with pytest.raises(TimeoutError, match="Step 1"):
            await tg.wait_for_message(alice, timeout=0.05, since=mark)
        await bot.edit_message_text("Step 2", chat_id=alice.id, message_id=old.message_id)
        edited = await tg.wait_for_message(alice, timeout=1, since=mark, edits=True)
        assert edited.text == "Step 2"
        assert (await tg.wait_for_message(alice, timeout=1)).message_id == old.message_id
    request = await tg.wait_for_request("editMessageText", since=0, timeout=1)
    assert request.params == {"chat_id": alice.id, "message_id": old.message_id, "text": "Step 2"}
    assert "Step 2" in tg.transcript(alice)


async def test_stop_releases_a_pending_long_poll() -> None:
    async with FakeTelegram() as tg, httpx.AsyncClient(timeout=10) as http:
        base = f"{tg.base_url}{tg.token}"
        poll = asyncio.create_task(http.get(f"{base}/getUpdates", params={"timeout": 30}))
        await tg.wait_until(lambda: tg.count("getUpdates") == 1)
        async with asyncio.timeout(3):
            await tg.stop()
            response = await poll
    assert response.json() == {"ok": True, "result": []}


@given(st.text())
def test_escaped_html_round_trips(text: str) -> None:
    assert parse_html(html.escape(text)) == (text, [])


def test_html_entities_use_utf16_offsets() -> None:
    text, entities = parse_html('🙂 <b>bold <a href="https://x.test">link</a></b>')
    assert text == "🙂 bold link"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 9},
        {"type": "text_link", "url": "https://x.test", "offset": 8, "length": 4},
    ]
    with pytest.raises(ParseError, match="Unsupported start tag"):
        parse_html("<div>x</div>")
    with pytest.raises(ParseError, match="end tag"):
        parse_html("<b>x")
