"""``deploybot run``: the Application on the Bot API until stopped, polling or by webhook.

PTB's ``run_polling``/``run_webhook`` own the event loop and stop on SIGINT, SIGTERM and
SIGABRT through ``loop.add_signal_handler``. SIGHUP is added on the same loop, next to
them, and reloads instead (``bot.flows.reload``); the console never installs it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from collections.abc import Callable
from urllib.parse import urlsplit

from bot.app import BotApplication, build_application
from bot.config.inventory import Inventory
from bot.config.settings import Settings
from bot.core.tasks import Background
from bot.flows.reload import SIGNAL, Reloader
from store import Store

log = logging.getLogger(__name__)
UPDATES = ["message", "callback_query"]


def run_polling(
    settings: Settings,
    inventory: Inventory,
    read_settings: Callable[[], Settings] | None = None,
) -> int:
    """Blocks until SIGINT/SIGTERM; SIGHUP reloads the inventory and the admins."""
    if settings.token is None:
        raise ValueError("run_polling needs a token")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    store = loop.run_until_complete(Store.open(settings.db))
    application, parts = build_application(
        settings,
        inventory,
        store,
        token=settings.token,
        base_url=settings.api_url,
        read_settings=read_settings,
    )
    log.info("deploybot: %d machines, %d admins", len(inventory), len(settings.admins))
    on_hangup = HangupHandler(application, parts.engine.reloader)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        if settings.webhook_url is None:
            application.run_polling(allowed_updates=UPDATES, close_loop=False)
        else:
            _run_webhook(application, settings, settings.webhook_url)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        loop.run_until_complete(on_hangup.drain())
        loop.run_until_complete(store.close())
        loop.close()
    return 0


def _run_webhook(application: BotApplication, settings: Settings, url: str) -> None:
    """PTB's webhook server behind the operator's reverse proxy (docs/telegram.md).

    A fresh random secret is registered with setWebhook at every start; PTB's handler
    answers 403 to a request without it, so nobody who can reach the port can post
    updates that pose as an admin.
    """
    host, port = settings.webhook_listen
    log.info("deploybot: receiving updates by webhook on %s:%d", host, port)
    application.run_webhook(
        listen=host,
        port=port,
        url_path=urlsplit(url).path.lstrip("/"),
        webhook_url=url,
        secret_token=secrets.token_urlsafe(32),
        allowed_updates=UPDATES,
        close_loop=False,
    )


class HangupHandler:
    """SIGHUP → one reload task on the loop; ignored until the bot has started."""

    def __init__(self, application: BotApplication, reloader: Reloader) -> None:
        self.application = application
        self.reloader = reloader
        self._tasks = Background()

    def __call__(self) -> None:
        if not self.application.running:
            log.warning("SIGHUP before the bot runs (or while it stops): ignored")
            return
        self._tasks.spawn(self._reload(), name="reload-sighup")

    async def _reload(self) -> None:
        try:
            await self.reloader.reload(SIGNAL)
        except Exception:
            log.exception("the reload on SIGHUP failed")

    async def drain(self) -> None:
        """Let a reload under way finish before the store closes."""
        await self._tasks.drain()
