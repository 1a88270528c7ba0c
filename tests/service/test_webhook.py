"""Webhook mode: ``deploybot run`` with DEPLOYBOT_WEBHOOK_URL, posted to over real HTTP.

The bot registers its URL and a random secret with setWebhook; PTB's webhook server (on
loopback, as behind a reverse proxy) answers 403 to a request without the secret or with a
wrong one and never processes it, and handles the one that carries it.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from bot.config.settings import SettingsError, load_settings
from tests.botprocess import BotProcess
from tests.botrig import BotRig
from tests.fake_telegram import FakeUser
from tests.people import ADMIN, STRANGER
from tests.waiting import eventually

PUBLIC_URL = "https://bot.example.org/telegram/hook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest_asyncio.fixture
async def webhook_bot(rig: BotRig) -> AsyncIterator[tuple[BotProcess, str]]:
    rig.write_inventory('[machines.web]\nhost = "127.0.0.1"\nssh_port = 1\n')
    port = free_port()
    bot = BotProcess(
        rig,
        rig.root / "bot-output.log",
        extra_env={
            "DEPLOYBOT_WEBHOOK_URL": PUBLIC_URL,
            "DEPLOYBOT_WEBHOOK_LISTEN": f"127.0.0.1:{port}",
        },
    )
    url = f"http://127.0.0.1:{port}/telegram/hook"
    try:
        await bot.start(ready="setWebhook")
        # setWebhook comes first, then PTB's server listens: wait until it answers at all.
        await eventually(lambda: listening(url), timeout=30, what="the webhook server")
        yield bot, url
    finally:
        await bot.stop()
        if sys.exc_info()[0] is not None and bot.output.exists():
            print(bot.output.read_text(errors="replace")[-5000:])


async def listening(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as answer:
            return answer.status == 405  # the handler takes POST only
    except aiohttp.ClientConnectionError:
        return False


async def update_of(rig: BotRig, user: FakeUser, text: str) -> bytes:
    """The update Telegram would post for ``text`` (built by the fake, not fetched)."""
    await rig.tg.send_text(user, text)
    update = rig.tg.state.updates.pop()
    return json.dumps(update).encode()


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=body, headers={"Content-Type": "application/json", **headers}
        ) as answer,
    ):
        return answer.status


async def test_the_webhook_refuses_requests_without_the_secret(
    rig: BotRig, webhook_bot: tuple[BotProcess, str]
) -> None:
    _, url = webhook_bot
    tg, admin = rig.tg, rig.tg.user(ADMIN, "ada")
    registered = tg.calls("setWebhook")[-1].params
    assert registered["url"] == PUBLIC_URL
    secret = str(registered["secret_token"])
    assert len(secret) >= 32
    assert tg.state.webhook_secret == secret
    # Long polling is off: Telegram would refuse getUpdates while the webhook is set.
    assert tg.count("getUpdates") == 0

    forged = await update_of(rig, admin, "/machines")
    assert await post(url, forged, {}) == 403
    assert await post(url, forged, {SECRET_HEADER: secret[:-1] + "x"}) == 403
    assert await post(url, forged, {SECRET_HEADER: ""}) == 403

    genuine = await update_of(rig, admin, "/whoami")
    assert await post(url, genuine, {SECRET_HEADER: secret}) == 200
    answer = await tg.wait_for_message(admin, timeout=20)
    assert answer.body == f"You are {ADMIN} (@ada): admin (every machine)."
    # Updates are handled in order: the forged ones, had they got in, would have come first.
    assert [m.body for m in tg.bot_messages(admin)] == [answer.body]


async def test_a_stranger_by_webhook_is_refused_by_the_gate(
    rig: BotRig, webhook_bot: tuple[BotProcess, str]
) -> None:
    """Webhook updates never pass the door (polling's): the gate refuses strangers alike."""
    _, url = webhook_bot
    tg = rig.tg
    secret = str(tg.calls("setWebhook")[-1].params["secret_token"])
    stranger = tg.user(STRANGER, "eve")
    update = await update_of(rig, stranger, "/machines")
    assert await post(url, update, {SECRET_HEADER: secret}) == 200
    refusal = await tg.wait_for_message(stranger, timeout=20)
    assert refusal.body.startswith(f"Not authorised. Your Telegram user id is {STRANGER};")


async def test_an_update_the_library_cannot_parse_is_not_logged(
    rig: BotRig, webhook_bot: tuple[BotProcess, str]
) -> None:
    """PTB logs an update it cannot parse in full, at CRITICAL; it may hold a passphrase."""
    bot, url = webhook_bot
    tg, admin = rig.tg, rig.tg.user(ADMIN, "ada")
    secret = str(tg.calls("setWebhook")[-1].params["secret_token"])
    passphrase = "correct horse battery staple"
    update = json.loads(await update_of(rig, admin, passphrase))
    update["message"]["chat"] = admin.id  # a shape PTB's parser fails on
    assert await post(url, json.dumps(update).encode(), {SECRET_HEADER: secret}) == 400
    genuine = await update_of(rig, admin, "/whoami")
    assert await post(url, genuine, {SECRET_HEADER: secret}) == 200
    await tg.wait_for_message(admin, lambda m: m.body.startswith("You are"), timeout=20)
    logged = bot.output.read_text(errors="replace")
    assert "Something went wrong processing the data" in logged  # the record is there
    assert "horse" not in logged


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("DEPLOYBOT_WEBHOOK_URL", "http://bot.example.org/hook", "must be an https:// URL"),
        ("DEPLOYBOT_WEBHOOK_URL", "https://bot.example.org/h?x=1", "no query"),
        ("DEPLOYBOT_WEBHOOK_LISTEN", "8443", "expected host:port"),
        ("DEPLOYBOT_WEBHOOK_LISTEN", "127.0.0.1:99999", "expected host:port"),
    ],
)
def test_wrong_webhook_settings_are_refused(name: str, value: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        load_settings(None, {name: value})


def test_webhook_settings_default_to_polling_on_loopback() -> None:
    settings = load_settings(None, {})
    assert settings.webhook_url is None
    assert settings.webhook_listen == ("127.0.0.1", 8443)
    ipv6 = load_settings(None, {"DEPLOYBOT_WEBHOOK_LISTEN": "[::1]:9443"})
    assert ipv6.webhook_listen == ("::1", 9443)
