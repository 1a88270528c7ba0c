"""Long answers as pages under Telegram's limit, and the views a person pages through.

A list (the machines, the jobs, the audit log) is split between lines into pages of at
most ``MAX_TEXT`` characters, counted as Telegram counts them: code points of the text as
sent (docs/telegram-limits.md). Nothing is cut: a line longer than a page is split across
pages. Every page carries the list's header and a footer that says where it is.

A view is one paged answer: the pages as they were when it was asked, the one person who
may turn them, and the message they are shown in. Its buttons carry ``pg:<token>:<page>``
— a random token, so data forged or replayed from another view matches nothing (as in
``bot.chat.confirm``), well under Telegram's 64-byte limit. Views are kept in memory, at
most ``MAX_VIEWS`` of them and for ``VIEW_TTL`` seconds, so memory stays bounded, and in the
store (``store.remembered``) for as long, so an answer's buttons still turn its pages after
a restart; their times are wall-clock times for that reason.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from bot.chat.port import Button
from bot.core.telegram_limits import MAX_TEXT
from store.remembered import PageViews, SavedView

PREFIX = "pg"
MAX_VIEWS = 128
VIEW_TTL = 3600.0
# Room kept for the footer ("page 12 of 34"), so a page never exceeds the limit.
_FOOTER_ROOM = 40


def split_pages(
    items: Sequence[str], *, header: str = "", footer: str = "", limit: int = MAX_TEXT
) -> list[str]:
    """``header``, items and ``footer`` as pages of at most ``limit`` code points each.

    An item is a line or a block of lines (one machine's status) kept on one page when it
    fits; a longer one is split into pieces that do. With more than one page, each ends
    with "page i of n" (after ``footer``, if any).
    """
    fixed = len(header) + 1 if header else 0
    fixed += len(footer) + 1 if footer else 0
    room = limit - fixed - _FOOTER_ROOM
    if room < 80:
        raise ValueError(f"a page of {limit} characters leaves no room for lines")
    bodies: list[list[str]] = [[]]
    used = 0
    for line in _pieces(items, room):
        cost = len(line) + (1 if bodies[-1] else 0)
        if bodies[-1] and used + cost > room:
            bodies.append([])
            used, cost = 0, len(line)
        bodies[-1].append(line)
        used += cost
    count = len(bodies)
    pages = []
    for number, body in enumerate(bodies, start=1):
        parts = ([header] if header else []) + body + ([footer] if footer else [])
        if count > 1:
            parts.append(f"page {number} of {count}")
        pages.append("\n".join(parts))
    return pages


def _pieces(items: Sequence[str], room: int) -> list[str]:
    out: list[str] = []
    for line in items:
        while len(line) > room:
            out.append(line[:room])
            line = line[room:]
        out.append(line)
    return out


class Turn(Enum):
    """What a page button press did, so the chat surface can answer the presser."""

    SHOWN = "shown"
    NOT_YOURS = "not yours"
    EXPIRED = "expired"


@dataclass(eq=False)
class View:
    """One paged answer: its pages, who may turn them, where they are shown."""

    user_id: int
    pages: tuple[str, ...]
    token: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    chat_id: int = 0
    message_id: int = 0
    created: float = field(default_factory=time.time)

    def buttons(self, page: int) -> list[list[Button]]:
        """‹ and › to the neighbouring pages (none on a single page)."""
        row = []
        if page > 0:
            row.append(Button("‹", f"{PREFIX}:{self.token}:{page - 1}"))
        if page < len(self.pages) - 1:
            row.append(Button("›", f"{PREFIX}:{self.token}:{page + 1}"))
        return [row] if row else []


@dataclass(frozen=True)
class Press:
    """A resolved press: the verdict and, when shown, the view and the page to show."""

    turn: Turn
    view: View | None = None
    page: int = 0


class Views:
    """Open views by token; the oldest are forgotten beyond ``MAX_VIEWS`` or ``VIEW_TTL``."""

    def __init__(
        self,
        saved: PageViews | None = None,
        *,
        limit: int = MAX_VIEWS,
        ttl: float = VIEW_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.saved = saved
        self.limit = limit
        self.ttl = ttl
        self.clock = clock
        self._open: OrderedDict[str, View] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, user_id: int, pages: Sequence[str]) -> View:
        view = View(user_id=user_id, pages=tuple(pages), created=self.clock())
        self._open[view.token] = view
        self._forget_old()
        return view

    async def shown(self, view: View, chat_id: int, message_id: int) -> None:
        """Where the view's first page was posted: presses elsewhere do not turn it."""
        view.chat_id, view.message_id = chat_id, message_id
        if self.saved is not None:
            saved = SavedView(
                view.token, view.user_id, chat_id, message_id, view.created, view.pages
            )
            await self.saved.save(saved, expired_before=self.clock() - self.ttl)

    async def close(self, view: View) -> None:
        self._open.pop(view.token, None)
        if self.saved is not None:
            await self.saved.forget(view.token)

    async def press(self, data: str, user_id: int, chat_id: int, message_id: int) -> Press:
        """Judge a press: only the asker, only on the view's message, only a real page."""
        self._forget_old()
        parts = data.split(":")
        if len(parts) != 3 or parts[0] != PREFIX or not parts[2].isdigit():
            return Press(Turn.EXPIRED)
        view = self._open.get(parts[1]) or await self._load(parts[1])
        page = int(parts[2])
        if (
            view is None
            or (view.chat_id, view.message_id) != (chat_id, message_id)
            or page >= len(view.pages)
        ):
            return Press(Turn.EXPIRED)
        if view.user_id != user_id:
            return Press(Turn.NOT_YOURS)
        return Press(Turn.SHOWN, view, page)

    async def _load(self, token: str) -> View | None:
        """A view shown before a restart (or forgotten here beyond ``limit``), unexpired."""
        if self.saved is None or len(token) > 64:
            return None
        found = await self.saved.load(token)
        if found is None or found.created < self.clock() - self.ttl:
            return None
        view = View(
            user_id=found.user_id,
            pages=found.pages,
            token=found.token,
            chat_id=found.chat_id,
            message_id=found.message_id,
            created=found.created,
        )
        self._open[view.token] = view
        self._forget_old()
        return self._open.get(view.token)

    def _forget_old(self) -> None:
        deadline = self.clock() - self.ttl
        while self._open:
            token, oldest = next(iter(self._open.items()))
            if len(self._open) <= self.limit and oldest.created >= deadline:
                break
            del self._open[token]
