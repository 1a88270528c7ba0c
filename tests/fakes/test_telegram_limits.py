"""Telegram's limits, refused alike by the fake Bot API (over HTTP) and the console transport.

Each limit is tried at the limit and one over, through the real python-telegram-bot ``Bot``,
which must raise what it raises against Telegram. docs/telegram-limits.md says how Telegram
counts and answers.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from telegram import (
    Bot,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
)
from telegram.error import BadRequest, NetworkError
from telegram.request import RequestData

from bot.console.transport import CONSOLE_TOKEN, ConsoleBotApi
from bot.core.telegram_limits import (
    MAX_CAPTION,
    MAX_PHOTO_BYTES,
    MAX_UPLOAD_BYTES,
    NOT_MODIFIED,
    image_size,
)
from tests.fake_telegram import FakeTelegram, FakeUser, fixtures

fake_telegram = fixtures.fake_telegram

EMOJI = "🙂"  # one code point, two UTF-16 code units, four UTF-8 bytes
TOO_LONG = "Message is too long"


@dataclass
class Target:
    """A Bot talking to one of the two transports, and the chat it may write to."""

    kind: str
    bot: Bot
    chat_id: int


@pytest_asyncio.fixture(params=["fake", "console"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "fake":
        async with FakeTelegram() as tg:
            alice = tg.user(1001, "alice")
            async with Bot(tg.token, base_url=tg.base_url) as bot:
                yield Target("fake", bot, alice.id)
    else:
        api = ConsoleBotApi(1, out=io.StringIO())
        async with Bot(CONSOLE_TOKEN, base_url="console://bot", request=api) as bot:
            yield Target("console", bot, api.user_id)


def exactly(message: str) -> str:
    """A ``match=`` pattern for PTB's whole message, nothing more or less."""
    return f"^{re.escape(message)}$"


def keyboard(data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data=data)]])


async def sent(target: Target, text: str, **kwargs: object) -> Message:
    return await target.bot.send_message(target.chat_id, text, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("longest", "over"),
    [
        pytest.param("x" * 4096, "x" * 4097, id="ascii"),
        pytest.param("é" * 4096, "é" * 4097, id="two-byte"),
        # Code points, not UTF-16 code units: 4096 emoji (8192 units) are one message.
        pytest.param(EMOJI * 4096, EMOJI * 4097, id="emoji"),
        pytest.param("x" * 4095 + EMOJI, "x" * 4096 + EMOJI, id="mixed"),
        # Leading and trailing spaces and newlines are trimmed before counting.
        pytest.param("\n " + "x" * 4096 + " \n\n", "\n " + "x" * 4097 + "\n", id="trimmed"),
    ],
)
async def test_message_text_up_to_4096_characters(target: Target, longest: str, over: str) -> None:
    assert (await sent(target, longest)).message_id
    with pytest.raises(BadRequest, match=exactly(TOO_LONG)):
        await sent(target, over)


async def test_text_is_counted_after_html_parsing(target: Target) -> None:
    await sent(target, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    await sent(target, "&lt;" * 4096, parse_mode="HTML")
    with pytest.raises(BadRequest, match=TOO_LONG):
        await sent(target, "<i>" + "x" * 4097 + "</i>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=TOO_LONG):
        await sent(target, "&amp;" * 4097, parse_mode="HTML")


async def test_empty_blank_and_oversized_texts(target: Target) -> None:
    with pytest.raises(BadRequest, match=exactly("Message text is empty")):
        await sent(target, "")
    with pytest.raises(BadRequest, match=exactly("Text must be non-empty")):
        await sent(target, " \n \n")
    # Over 32 KiB of UTF-8 the Bot API refuses the text before it parses it.
    with pytest.raises(BadRequest, match=exactly("Text is too long")):
        await sent(target, "é" * 16_385)


async def test_edited_text_has_the_same_limits(target: Target) -> None:
    message = await sent(target, "short")
    edit = target.bot.edit_message_text
    await edit(EMOJI * 4096, chat_id=target.chat_id, message_id=message.message_id)
    with pytest.raises(BadRequest, match=exactly(TOO_LONG)):
        await edit("x" * 4097, chat_id=target.chat_id, message_id=message.message_id)
    with pytest.raises(BadRequest, match=exactly("Message text is empty")):
        await edit("", chat_id=target.chat_id, message_id=message.message_id)


@pytest.mark.parametrize(
    ("longest", "over"),
    [
        pytest.param("d" * 64, "d" * 65, id="ascii"),
        pytest.param("é" * 32, "é" * 32 + "x", id="two-byte"),
        pytest.param(EMOJI * 16, EMOJI * 15 + "xyzab", id="emoji"),
    ],
)
async def test_callback_data_up_to_64_bytes(target: Target, longest: str, over: str) -> None:
    assert len(longest.encode()) == 64
    assert len(over.encode()) == 65
    message = await sent(target, "Proceed?", reply_markup=keyboard(longest))
    with pytest.raises(BadRequest, match=exactly("Button_data_invalid")):
        await sent(target, "Proceed?", reply_markup=keyboard(over))
    with pytest.raises(BadRequest, match=exactly("Button_data_invalid")):
        await target.bot.edit_message_reply_markup(
            target.chat_id, message.message_id, reply_markup=keyboard(over)
        )


async def test_a_button_needs_an_action(target: Target) -> None:
    plain = InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="")]])
    with pytest.raises(BadRequest, match="text buttons are unallowed in the inline keyboard"):
        await sent(target, "Proceed?", reply_markup=plain)


async def test_caption_up_to_1024_characters(target: Target) -> None:
    send = target.bot.send_document
    await send(target.chat_id, b"log\n", filename="a.log", caption=EMOJI * 1024)
    with pytest.raises(BadRequest, match=exactly("Message caption is too long")):
        await send(target.chat_id, b"log\n", filename="a.log", caption="x" * 1025)


async def test_document_over_50_mb_is_refused_with_413(target: Target) -> None:
    # 50 MB and a byte, from memory: nothing is written to disk, and the fake Bot API keeps
    # only the size of a file past the limit.
    with pytest.raises(NetworkError, match=exactly("Request Entity Too Large")):
        await target.bot.send_document(
            target.chat_id, b"\0" * (MAX_UPLOAD_BYTES + 1), filename="big.bin"
        )


def png(width: int, height: int) -> bytes:
    """A real PNG of that size (pillow comes with matplotlib)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (width, height), 255).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("fits", "refused"),
    [
        pytest.param((5000, 5000), (5001, 5000), id="width-plus-height"),
        pytest.param((2000, 100), (2001, 100), id="ratio-20"),
        pytest.param((100, 2000), (100, 2001), id="ratio-20-tall"),
    ],
)
async def test_photo_dimensions(
    target: Target, fits: tuple[int, int], refused: tuple[int, int]
) -> None:
    sent_photo = await target.bot.send_photo(target.chat_id, png(*fits))
    assert (sent_photo.photo[-1].width, sent_photo.photo[-1].height) == fits
    with pytest.raises(BadRequest, match=exactly("Photo_invalid_dimensions")):
        await target.bot.send_photo(target.chat_id, png(*refused))


async def test_photo_caption_size_and_content(target: Target) -> None:
    picture = png(200, 100)
    await target.bot.send_photo(target.chat_id, picture, caption="x" * MAX_CAPTION)
    with pytest.raises(BadRequest, match=exactly("Message caption is too long")):
        await target.bot.send_photo(target.chat_id, picture, caption="x" * (MAX_CAPTION + 1))
    # The header is what counts: a real image padded past 10 MB is refused for its size.
    padded = picture + b"\0" * (MAX_PHOTO_BYTES + 1 - len(picture))
    with pytest.raises(NetworkError, match=exactly("Request Entity Too Large")):
        await target.bot.send_photo(target.chat_id, padded)
    await target.bot.send_photo(target.chat_id, padded[:MAX_PHOTO_BYTES])
    with pytest.raises(BadRequest, match=exactly("Image_process_failed")):
        await target.bot.send_photo(target.chat_id, b"not a picture")


def test_image_size_reads_png_and_jpeg() -> None:
    from PIL import Image

    assert image_size(png(640, 7)) == (640, 7)
    out = io.BytesIO()
    Image.new("RGB", (321, 123)).save(out, format="JPEG")
    assert image_size(out.getvalue()) == (321, 123)
    assert image_size(b"GIF89a") is None


async def test_only_an_inline_keyboard_where_an_edit_allows_one(target: Target) -> None:
    asked = await sent(target, "Your passphrase?", reply_markup=ForceReply(selective=True))
    message = await sent(target, "Proceed?", reply_markup=keyboard("yes"))
    reply_keyboard = ReplyKeyboardMarkup([[KeyboardButton("yes")]])
    for markup in (ForceReply(selective=True), reply_keyboard):
        with pytest.raises(BadRequest, match=exactly("Inline keyboard expected")):
            await target.bot.edit_message_text(
                "Proceed now?",
                chat_id=target.chat_id,
                message_id=message.message_id,
                reply_markup=markup,  # type: ignore[arg-type]
            )
        with pytest.raises(BadRequest, match=exactly("Inline keyboard expected")):
            await target.bot.edit_message_reply_markup(
                target.chat_id,
                message.message_id,
                reply_markup=markup,  # type: ignore[arg-type]
            )
    assert asked.message_id != message.message_id


async def test_console_answers_with_telegrams_error_shape() -> None:
    api = ConsoleBotApi(1, out=io.StringIO())
    url = f"console://bot{CONSOLE_TOKEN}/sendMessage"
    status, body = await api.do_request(url, "POST", RequestData([]))
    assert status == 400
    assert json.loads(body) == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: message text is empty",
    }


async def test_fake_answers_with_telegrams_error_shape(fake_telegram: FakeTelegram) -> None:
    tg = fake_telegram
    alice = tg.user(1001, "alice")
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{tg.base_url}{tg.token}/sendMessage", data={"chat_id": alice.id, "text": "x" * 4097}
        )
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: message is too long",
    }
    [call] = tg.calls("sendMessage")
    assert (call.status, call.description) == (400, "Bad Request: message is too long")


@pytest.fixture
def alice(fake_telegram: FakeTelegram) -> FakeUser:
    return fake_telegram.user(1001, "alice")


async def test_fake_refuses_edits_and_deletes_of_missing_messages(
    fake_telegram: FakeTelegram, alice: FakeUser
) -> None:
    async with Bot(fake_telegram.token, base_url=fake_telegram.base_url) as bot:
        one = await bot.send_message(alice.id, "one")
        with pytest.raises(BadRequest, match=exactly("Message to edit not found")):
            await bot.edit_message_text("x", chat_id=alice.id, message_id=one.message_id + 1)
        with pytest.raises(BadRequest, match=exactly("Message to edit not found")):
            await bot.edit_message_reply_markup(alice.id, 4242, reply_markup=keyboard("a"))
        with pytest.raises(BadRequest, match=exactly("Message to delete not found")):
            await bot.delete_message(alice.id, 4242)
        with pytest.raises(BadRequest) as not_modified:
            await bot.edit_message_text("one", chat_id=alice.id, message_id=one.message_id)
    assert not_modified.value.message == NOT_MODIFIED.capitalize()


async def test_fake_refuses_a_long_button_answer(
    fake_telegram: FakeTelegram, alice: FakeUser
) -> None:
    tg = fake_telegram
    async with Bot(tg.token, base_url=tg.base_url) as bot:
        message = await bot.send_message(alice.id, "Proceed?", reply_markup=keyboard("yes"))
        first = await tg.press(alice, tg.message(alice, message.message_id), "yes")
        with pytest.raises(BadRequest, match=exactly("Message_too_long")):
            await bot.answer_callback_query(first, "x" * 201)
        assert await bot.answer_callback_query(first, "x" * 200)


async def test_fake_document_limit_is_counted_exactly(
    fake_telegram: FakeTelegram, alice: FakeUser
) -> None:
    tg = fake_telegram
    tg.state.max_document_bytes = 4096
    async with Bot(tg.token, base_url=tg.base_url) as bot:
        kept = await bot.send_document(alice.id, b"a" * 4096, filename="ok.txt")
        assert kept.document is not None
        assert kept.document.file_size == 4096
        with pytest.raises(NetworkError, match=exactly("Request Entity Too Large")):
            await bot.send_document(alice.id, b"a" * 4097, filename="big.txt")
    refused = tg.calls("sendDocument")[-1]
    assert refused.status == 413
    assert [f.size for f in refused.files] == [4097]
    assert len(tg.documents_in(alice)) == 1
