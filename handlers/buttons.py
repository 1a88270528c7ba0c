"""Inline button presses: confirmations that only the asking user may answer."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from bot.chat.confirm import Confirmations, Press
from store import Store


class Buttons:
    def __init__(self, confirmations: Confirmations, store: Store) -> None:
        self.confirmations = confirmations
        self.store = store

    async def on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        result = self.confirmations.press(query.data or "", query.from_user.id)
        await self.store.audit(
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


def register(application: Application, buttons: Buttons) -> None:  # type: ignore[type-arg]
    application.add_handler(CallbackQueryHandler(buttons.on_press))
