"""Paged answers in the chat: the first page with ‹ › buttons, turned in place on a press.

Every list a command answers with goes through :class:`Pager`, so no answer is cut (the
chat port's ``clip``) or refused for its length. The splitting and the views are
``bot.chat.pages``; this module posts, answers presses and edits the message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.error import BadRequest, TelegramError

from bot.chat.pages import Turn, View, Views, split_pages
from handlers.plumbing.chat_port import deliver
from handlers.plumbing.registry import Call

log = logging.getLogger(__name__)

ANSWERS = {
    Turn.NOT_YOURS: "Only the person who asked can turn these pages.",
    Turn.EXPIRED: "These pages have expired: ask again.",
}


def _markup(view: View, page: int) -> InlineKeyboardMarkup | None:
    rows = view.buttons(page)
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows]
    )


class Pager:
    """Answers a command with pages, and turns them for the person who asked."""

    def __init__(self, views: Views) -> None:
        self.views = views

    async def reply(
        self, call: Call, lines: Sequence[str], *, header: str = "", footer: str = ""
    ) -> None:
        """Answer ``call`` with ``lines``: one message, paged when it would be too long."""
        await self.answer(call.message, call.user.id, lines, header=header, footer=footer)

    async def answer(
        self,
        message: Message,
        user_id: int,
        lines: Sequence[str],
        *,
        header: str = "",
        footer: str = "",
    ) -> None:
        pages = split_pages(lines, header=header, footer=footer)
        if len(pages) == 1:
            await message.reply_text(pages[0])
            return
        view = self.views.open(user_id, pages)
        sent = await message.reply_text(pages[0], reply_markup=_markup(view, 0))
        await self.views.shown(view, sent.chat.id, sent.message_id)

    async def on_press(self, query: CallbackQuery) -> Turn:
        """Show the pressed page in place, or tell the presser why not."""
        shown = query.message
        chat_id, message_id = (shown.chat.id, shown.message_id) if shown else (0, 0)
        press = await self.views.press(query.data or "", query.from_user.id, chat_id, message_id)
        if press.view is None:
            await query.answer(ANSWERS[press.turn], show_alert=press.turn is Turn.NOT_YOURS)
            return press.turn
        view, page = press.view, press.page
        await query.answer()
        try:
            await deliver(
                lambda: query.edit_message_text(view.pages[page], reply_markup=_markup(view, page)),
                repeatable=True,
            )
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                log.warning("could not turn page %s of view in chat %s: %s", page, chat_id, exc)
        except TelegramError as exc:
            log.warning("could not turn page %s of view in chat %s: %s", page, chat_id, exc)
        return press.turn
