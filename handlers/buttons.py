"""Inline button presses: confirmations that only the asking user may answer."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from bot.chat.confirm import Press
from bot.flows.services import Services


class Buttons:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        result = self.s.confirmations.press(query.data or "", query.from_user.id)
        await self.s.store.audit(
            user_id=query.from_user.id,
            username=query.from_user.username or "",
            action="confirm",
            decision={Press.ACCEPTED: "allowed"}.get(result, "refused"),
            detail=result.value,
        )
        text = {
            Press.ACCEPTED: None,
            Press.NOT_YOURS: "Only the person who asked can answer this.",
            Press.EXPIRED: "This confirmation has expired.",
        }[result]
        await query.answer(text, show_alert=result is Press.NOT_YOURS)


def register(application: Application, services: Services) -> None:  # type: ignore[type-arg]
    application.add_handler(CallbackQueryHandler(Buttons(services).on_press))
