"""People the bot does not know: audited, answered at most once an hour, never waited for.

The gate handles updates one at a time. An answer to a stranger is a rate-limited send
(Telegram allows 20 messages a minute in a group), and awaiting it there let 60 fake
accounts in a group hold up a waiting passphrase for minutes. So nothing here is awaited
on the update path except the audit write:

- in a private chat, the one refusal an hour (with the user's id) is sent in the
  background, through a bounded set of tasks: past the bound, refusals are dropped;
- in a group, strangers get no answer at all; the first stranger seen in a group makes
  the bot look (in the background) whether any admin is a member, and leave it if not;
- repeated refusals are counted on one audit line per stranger per hour, and past a few
  strangers an hour all further ones share one line, so a flood cannot push the real
  entries out of ``/audit``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from telegram import Bot, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError

from store import Store

log = logging.getLogger(__name__)
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[Any]"]
WINDOW = 3600.0
MAX_PENDING = 16  # background answers in flight; more are dropped
MAX_TRACKED = 10_000  # strangers remembered per window; past it nobody is answered
LINES_PER_WINDOW = 5  # strangers with a line of their own per window
STRANGER_DETAIL = "not an admin or operator"
_ABSENT = {ChatMemberStatus.LEFT, ChatMemberStatus.BANNED}


def refusal_text(user_id: int) -> str:
    return (
        f"Not authorised. Your Telegram user id is {user_id}; "
        "an admin can add it to DEPLOYBOT_ADMINS or a machine's operators."
    )


@dataclass
class _Line:
    entry_id: int
    count: int
    since: str


class Strangers:
    """Refuses strangers without ever blocking the update loop (see the module's text)."""

    def __init__(
        self,
        *,
        store: Store,
        admins: frozenset[int],
        interval: float = WINDOW,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.store = store
        self.admins = admins
        self.interval = interval
        self.max_pending = max_pending
        self._window_start = time.monotonic()
        self._answered: set[int] = set()
        self._lines: dict[int, _Line] = {}
        self._shared: _Line | None = None
        self._shared_users: set[int] = set()
        self._groups_judged: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._spawn: Spawn = asyncio.ensure_future

    async def refuse(
        self,
        update: Update,
        spawn: Spawn,
        user_id: int,
        username: str,
        action: str,
        machine: str,
    ) -> None:
        """Audit the refusal (awaited) and answer it in the background (not awaited).

        ``spawn`` starts the background task: the Application's ``create_task``, which
        its ``stop()`` waits for, so no answer outlives the bot's store.
        """
        self._spawn = spawn
        self._roll_window()
        await self._audit(user_id, username, action, machine)
        bot = update.get_bot()
        query = update.callback_query
        if query is not None:
            self._background(lambda: query.answer("Not authorised."))
        chat = update.effective_chat
        if chat is None:
            return
        if chat.type != ChatType.PRIVATE:
            if chat.id not in self._groups_judged and len(self._groups_judged) < MAX_TRACKED:
                self._groups_judged.add(chat.id)
                self._background(lambda: self._leave_unless_admin(bot, chat.id))
            return
        if query is None and user_id not in self._answered and len(self._answered) < MAX_TRACKED:
            self._answered.add(user_id)
            self._background(lambda: bot.send_message(chat.id, refusal_text(user_id)))

    def _roll_window(self) -> None:
        now = time.monotonic()
        if now - self._window_start < self.interval:
            return
        self._window_start = now
        self._answered.clear()
        self._lines.clear()
        self._shared = None
        self._shared_users.clear()

    async def _audit(self, user_id: int, username: str, action: str, machine: str) -> None:
        clock = time.strftime("%H:%M:%S", time.gmtime())
        line = self._lines.get(user_id)
        if line is not None:
            line.count += 1
            await self.store.update_audit(
                line.entry_id,
                detail=f"{STRANGER_DETAIL}; {line.count} refusals since {line.since}, "
                f"last {clock}: {action} {machine}".rstrip(),
            )
            return
        if len(self._lines) < LINES_PER_WINDOW:
            entry_id = await self.store.audit(
                user_id=user_id,
                username=username,
                action=action,
                machine=machine,
                decision="refused",
                detail=STRANGER_DETAIL,
            )
            self._lines[user_id] = _Line(entry_id, 1, clock)
            return
        if len(self._shared_users) < MAX_TRACKED:
            self._shared_users.add(user_id)
        shared = self._shared
        if shared is None:
            entry_id = await self.store.audit(
                user_id=user_id,
                username="",
                action="strangers",
                decision="refused",
                detail=f"{STRANGER_DETAIL}: 1 refusal from 1 more stranger",
            )
            self._shared = _Line(entry_id, 1, clock)
            return
        shared.count += 1
        await self.store.update_audit(
            shared.entry_id,
            user_id=user_id,
            detail=f"{STRANGER_DETAIL}: {shared.count} refusals from "
            f"{len(self._shared_users)} more strangers since {shared.since}, last {clock} "
            f"from {user_id}",
        )

    def _background(self, send: Callable[[], Awaitable[object]]) -> None:
        if len(self._tasks) >= self.max_pending:
            log.info("dropping an answer to a stranger: %d still on their way", len(self._tasks))
            return

        async def run() -> None:
            try:
                await send()
            except TelegramError as exc:
                log.info("could not answer a stranger: %s", exc)

        task = self._spawn(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _leave_unless_admin(self, bot: Bot, chat_id: int) -> None:
        """Stay in a group only while an admin is a member of it."""
        for admin in sorted(self.admins):
            try:
                member = await bot.get_chat_member(chat_id, admin)
            except TelegramError:
                continue
            if member.status not in _ABSENT:
                return
        log.warning("leaving group %s: a stranger wrote there and no admin is a member", chat_id)
        await self.store.audit(
            user_id=None,
            username="",
            action="leave group",
            decision="left",
            detail=f"chat {chat_id}: strangers wrote there and no admin is a member",
        )
        await bot.leave_chat(chat_id)
