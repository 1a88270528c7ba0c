"""The composition root: settings + inventory + store → services → Application."""

from __future__ import annotations

import logging
from typing import Any

from telegram import BotCommand, Update
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, ContextTypes
from telegram.request import BaseRequest

from bot.access import Access
from bot.commands import COMMANDS
from bot.inventory import Inventory
from bot.services import Services
from bot.settings import Settings
from handlers import register_all
from store import Store

log = logging.getLogger(__name__)
BotApplication = Application[Any, Any, Any, Any, Any, Any]


async def open_services(settings: Settings, inventory: Inventory) -> Services:
    store = await Store.open(settings.db)
    return Services(
        settings=settings,
        inventory=inventory,
        store=store,
        access=Access(admins=settings.admins, inventory=inventory),
    )


async def _on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log the failure without the update: it may hold a passphrase someone just typed."""
    update_id = update.update_id if isinstance(update, Update) else None
    error = context.error
    log.error("handler failed on update %s: %s", update_id, type(error).__name__, exc_info=error)
    if isinstance(update, Update) and update.effective_chat is not None:
        try:
            await context.bot.send_message(
                update.effective_chat.id, "Something went wrong on my side; it is logged."
            )
        except Exception:
            log.debug("could not report the failure to the chat")


def build_application(
    services: Services,
    *,
    token: str,
    base_url: str,
    request: BaseRequest | None = None,
    rate_limiter: bool = True,
) -> BotApplication:
    """The Application with every handler; ``request`` replaces the HTTP transport."""
    builder = ApplicationBuilder().token(token).base_url(base_url)
    if request is not None:
        builder = builder.request(request).get_updates_request(request)
    limiter = AIORateLimiter(max_retries=3) if rate_limiter else None

    async def post_init(application: BotApplication) -> None:
        commands = [
            BotCommand(spec.name, spec.summary)
            for spec in COMMANDS.values()
            if spec.name in services.commands
        ]
        await application.bot.set_my_commands(commands)

    application: BotApplication = (
        builder.rate_limiter(limiter).post_init(post_init).build()  # type: ignore[arg-type]
    )
    register_all(application, services)
    application.add_error_handler(_on_error)
    return application
