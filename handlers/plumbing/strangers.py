"""People the bot does not know: audited, answered at most once an hour, never waited for.

An answer to a stranger is a rate-limited send (Telegram allows 20 messages a minute in a
group), and awaiting it on the update path let 60 fake accounts in a group hold up a
waiting passphrase for minutes. So nothing here is awaited, not even the audit write
(refusals are counted in memory and written together within FLUSH_DELAY, through tasks
the Application's ``stop()`` waits for). While polling, strangers are refused at the door
(``handlers/plumbing/door.py``) from the update's raw JSON, before it is parsed or queued; the gate
refuses the ones that reach it (webhook mode) the same way, through a :class:`Visitor`.

- in a private chat, the one refusal an hour (with the user's id) is sent in the
  background, through a bounded set of tasks: past the bound, refusals are dropped;
- in a group, strangers get no answer at all; the first stranger seen in a group makes
  the bot look (in the background, with the next flush) whether any admin is a member,
  and leave it if not;
- repeated refusals are counted on one audit line per stranger per hour, and past a few
  strangers an hour all further ones share one line, so a flood cannot push the real
  entries out of ``/audit``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram import Bot
from telegram.constants import ChatMemberStatus
from telegram.error import TelegramError

from store import Store
from store.database import StoreUnavailable

log = logging.getLogger(__name__)
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[Any]"]
WINDOW = 3600.0
MAX_PENDING = 16  # answers in flight, and groups looked at per flush; more are dropped
MAX_TRACKED = 10_000  # strangers remembered per window; past it nobody is answered
LINES_PER_WINDOW = 5  # strangers with a line of their own per window
STRANGER_DETAIL = "not an admin or operator"
FLUSH_DELAY = 0.5
_ABSENT = {ChatMemberStatus.LEFT, ChatMemberStatus.BANNED}


def refusal_text(user_id: int) -> str:
    return (
        f"Not authorised. Your Telegram user id is {user_id}; "
        "an admin can add it to DEPLOYBOT_ADMINS or a machine's operators."
    )


_order = itertools.count()


@dataclass(frozen=True)
class Visitor:
    """One update of a stranger, as much as its refusal needs: who, what, and where."""

    user_id: int
    username: str
    action: str
    machine: str
    chat_id: int | None
    private: bool
    callback_query_id: str | None = None


@dataclass(eq=False)
class _Line:
    """One audit line of refusals, counted in memory and written by ``_flush``."""

    user_id: int
    username: str
    action: str
    machine: str
    since: str
    count: int = 0
    detail: str = ""
    entry_id: int | None = None
    order: int = field(default_factory=lambda: next(_order))


class Strangers:
    """Refuses strangers without ever blocking the update loop (see the module's text)."""

    def __init__(
        self,
        *,
        store: Store,
        admins: Callable[[], frozenset[int]],
        bot: Bot,
        spawn: Spawn,
        interval: float = WINDOW,
        max_pending: int = MAX_PENDING,
    ) -> None:
        """``admins`` gives the admins in force now (a reload may change them); ``spawn``
        starts the background tasks: the Application's ``create_task``, which its ``stop()``
        waits for, so no answer or audit write outlives the bot's store."""
        self.store = store
        self.admins = admins
        self.bot = bot
        self.interval = interval
        self.max_pending = max_pending
        self._window_start = time.monotonic()
        self._answered: set[int] = set()
        self._lines: dict[int, _Line] = {}
        self._shared: _Line | None = None
        self._shared_users: set[int] = set()
        self._groups_judged: set[int] = set()
        self._groups_to_judge: list[int] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._spawn = spawn
        self._dirty: set[_Line] = set()
        self._flush_scheduled = False

    def refuse(self, visitor: Visitor) -> None:
        """Count the refusal and answer it, both in the background (nothing awaited here)."""
        self._roll_window()
        user_id = visitor.user_id
        self._audit(user_id, visitor.username, visitor.action, visitor.machine)
        bot, query_id, chat_id = self.bot, visitor.callback_query_id, visitor.chat_id
        if query_id is not None:
            self._background(lambda: bot.answer_callback_query(query_id, "Not authorised."))
        if chat_id is None:
            return
        if not visitor.private:
            if chat_id not in self._groups_judged and len(self._groups_judged) < MAX_TRACKED:
                self._groups_judged.add(chat_id)
                self._groups_to_judge.append(chat_id)
            return
        if query_id is None and user_id not in self._answered and len(self._answered) < MAX_TRACKED:
            self._answered.add(user_id)
            self._background(lambda: bot.send_message(chat_id, refusal_text(user_id)))

    def _roll_window(self) -> None:
        now = time.monotonic()
        if now - self._window_start < self.interval:
            return
        self._window_start = now
        self._answered.clear()
        self._lines.clear()
        self._shared = None
        self._shared_users.clear()

    def _audit(self, user_id: int, username: str, action: str, machine: str) -> None:
        """Count the refusal on its line; the lines are written by ``_flush``, together."""
        clock = time.strftime("%H:%M:%S", time.gmtime())
        line = self._lines.get(user_id)
        if line is None and len(self._lines) < LINES_PER_WINDOW:
            line = self._lines[user_id] = _Line(user_id, username, action, machine, clock)
        if line is not None:
            line.count += 1
            line.detail = (
                STRANGER_DETAIL
                if line.count == 1
                else f"{STRANGER_DETAIL}; {line.count} refusals since {line.since}, "
                f"last {clock}: {action} {machine}".rstrip()
            )
            self._dirty.add(line)
        else:
            if len(self._shared_users) < MAX_TRACKED:
                self._shared_users.add(user_id)
            shared = self._shared
            if shared is None:
                shared = self._shared = _Line(user_id, "", "strangers", "", clock)
            shared.count += 1
            shared.user_id = user_id
            shared.detail = (
                f"{STRANGER_DETAIL}: {shared.count} refusals from {len(self._shared_users)} "
                f"more strangers since {shared.since}, last {clock} from {user_id}"
            )
            self._dirty.add(shared)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._spawn(self._flush())

    async def _flush(self) -> None:
        """Write the counted lines and look at the groups strangers wrote in, at most once
        a FLUSH_DELAY and off the update path: a flood of refusals costs the update loop no
        database write each, and what it brings along (a passphrase answered right after
        it) is handled before any of this."""
        await asyncio.sleep(FLUSH_DELAY)
        self._flush_scheduled = False
        groups, self._groups_to_judge = self._groups_to_judge, []
        dirty, self._dirty = self._dirty, set()
        for line in sorted(dirty, key=lambda one: one.order):
            try:
                if line.entry_id is None:
                    line.entry_id = await self.store.audit(
                        user_id=line.user_id,
                        username=line.username,
                        action=line.action,
                        machine=line.machine,
                        decision="refused",
                        detail=line.detail,
                    )
                else:
                    await self.store.update_audit(
                        line.entry_id, detail=line.detail, user_id=line.user_id
                    )
            except StoreUnavailable as exc:
                log.warning("could not audit refusals of strangers: %s", exc)
                self._dirty.add(line)
        if len(groups) > self.max_pending:
            log.info("not looking at %d groups strangers wrote in", len(groups) - self.max_pending)
        # Awaited here, not spawned: the Application's stop() waits for this task, and
        # would not wait for one spawned while it stops.
        await asyncio.gather(*(self._look_at(chat_id) for chat_id in groups[: self.max_pending]))

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

    async def _look_at(self, chat_id: int) -> None:
        try:
            await self._leave_unless_admin(chat_id)
        except (TelegramError, StoreUnavailable) as exc:
            log.info("could not look at group %s: %s", chat_id, exc)

    async def _leave_unless_admin(self, chat_id: int) -> None:
        """Stay in a group only while an admin is a member of it."""
        bot = self.bot
        for admin in sorted(self.admins()):
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
