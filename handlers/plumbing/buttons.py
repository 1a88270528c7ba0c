"""Inline button presses, routed by the prefix of their callback data.

``pg:`` are page turns (``handlers.plumbing.paging``); a command family may add a route of
its own (a :class:`PressRoute`, such as a rollout's detail, ``rd:``); everything else is a
confirmation (``bot.chat.confirm``), which answers data it did not make as expired. Every
press's verdict is audited.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from telegram import CallbackQuery, Update
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from bot.chat import pages
from bot.chat.confirm import Confirmations, Press
from bot.chat.pages import Turn
from handlers.plumbing.paging import Pager
from store import Store


class PressRoute(Protocol):
    """Presses whose callback data starts with ``prefix:``, audited as ``action``."""

    prefix: str
    action: str

    async def on_press(self, query: CallbackQuery) -> bool:
        """Answer the press; False when it was refused (the presser told why)."""
        ...


class Buttons:
    def __init__(
        self,
        confirmations: Confirmations,
        pager: Pager,
        store: Store,
        routes: Iterable[PressRoute] = (),
    ) -> None:
        self.confirmations = confirmations
        self.pager = pager
        self.store = store
        self.routes = {route.prefix: route for route in routes}

    async def on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        prefix = (query.data or "").split(":", 1)[0]
        if prefix == pages.PREFIX:
            turn = await self.pager.on_press(query)
            await self._audit(query, "page", turn is Turn.SHOWN, turn.value)
            return
        route = self.routes.get(prefix)
        if route is not None:
            shown = await route.on_press(query)
            await self._audit(query, route.action, shown, "shown" if shown else "refused")
            return
        result = self.confirmations.press(query.data or "", query.from_user.id)
        await self._audit(query, "confirm", result is Press.ACCEPTED, result.value)
        text = {
            Press.ACCEPTED: None,
            Press.NOT_YOURS: "Only the person who asked can answer this.",
            Press.EXPIRED: "This confirmation has expired.",
        }[result]
        await query.answer(text, show_alert=result is Press.NOT_YOURS)

    async def _audit(self, query: CallbackQuery, action: str, allowed: bool, detail: str) -> None:
        await self.store.audit(
            user_id=query.from_user.id,
            username=query.from_user.username or "",
            action=action,
            decision="allowed" if allowed else "refused",
            detail=detail,
        )


def register(application: Application, buttons: Buttons) -> None:  # type: ignore[type-arg]
    application.add_handler(CallbackQueryHandler(buttons.on_press))
