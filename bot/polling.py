"""``deploybot run``: the Application long-polling the Bot API until stopped."""

from __future__ import annotations

import asyncio
import logging

from bot.app import build_application
from bot.config.inventory import Inventory
from bot.config.settings import Settings
from store import Store

log = logging.getLogger(__name__)


def run_polling(settings: Settings, inventory: Inventory) -> int:
    """Blocks until SIGINT/SIGTERM; PTB's ``run_polling`` owns the event loop here."""
    if settings.token is None:
        raise ValueError("run_polling needs a token")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    store = loop.run_until_complete(Store.open(settings.db))
    application, _ = build_application(
        settings, inventory, store, token=settings.token, base_url=settings.api_url
    )
    log.info("deploybot: %d machines, %d admins", len(inventory), len(settings.admins))
    try:
        application.run_polling(allowed_updates=["message", "callback_query"], close_loop=False)
    finally:
        loop.run_until_complete(store.close())
        loop.close()
    return 0
