"""``deploybot console``: type commands, read the bot's answers, no Telegram needed."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TextIO

from telegram import Update

from bot.app import build_application
from bot.config.inventory import Inventory
from bot.config.settings import Settings
from bot.console.transport import CONSOLE_TOKEN, ConsoleBotApi
from store import Store

CONSOLE_USER = 1


async def run_console(
    settings: Settings, inventory: Inventory, stdin: TextIO, stdout: TextIO
) -> int:
    """Feed each typed line to the real Application and print its answers until EOF."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    user_id = min(settings.admins) if settings.admins else CONSOLE_USER
    # The person at the terminal runs the bot: they are an admin in this session.
    settings = _with_admin(settings, user_id)
    store = await Store.open(settings.db)
    api = ConsoleBotApi(user_id, out=stdout)
    application, _ = build_application(
        settings,
        inventory,
        store,
        token=CONSOLE_TOKEN,
        base_url="console://bot",
        request=api,
        rate_limiter=False,
        probes_enabled=inventory.path.name != "machines.example.toml",
    )
    interactive = stdin.isatty()
    if interactive:
        stdout.write(
            f"deploybot console — {len(inventory)} machines from {inventory.path}; "
            f"you are user {user_id} (admin). Try /help; Ctrl-D quits.\n"
        )
    try:
        async with application:
            if application.post_init is not None:
                await application.post_init(application)
            await application.start()
            while True:
                if interactive:
                    stdout.write("you> ")
                    stdout.flush()
                line = await asyncio.to_thread(stdin.readline)
                if not line:
                    break
                body = api.update_for(line)
                if body is not None:
                    await application.process_update(Update.de_json(body, application.bot))
            await application.stop()
            if application.post_stop is not None:
                await application.post_stop(application)
    finally:
        await store.close()
    return 0


def _with_admin(settings: Settings, user_id: int) -> Settings:
    from dataclasses import replace

    return replace(settings, admins=settings.admins | {user_id})
