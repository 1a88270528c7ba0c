"""Questions the bot is waiting to have answered in a private chat.

While a question is open, the user's next plain text message in that chat (or a reply to the
prompt) is its answer. The engine awaits a future; the chat surface routes messages here.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from itertools import count

_ids = count(1)


@dataclass(eq=False)
class Question:
    """One open question. ``secret`` answers are deleted from the chat at once."""

    user_id: int
    chat_id: int
    secret: bool
    purpose: str
    prompt_message_id: int | None = None
    answered_by: str = ""
    id: int = field(default_factory=lambda: next(_ids))
    future: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Answers:
    """The open questions, at most one per user and chat (a newer one replaces the older)."""

    def __init__(self, late_window: float = 600.0) -> None:
        self._open: dict[tuple[int, int], Question] = {}
        # Secret questions closed early (someone else answered): a late answer is still a
        # passphrase typed into a chat, so it is deleted and the sender told why.
        self._late: dict[tuple[int, int], tuple[float, str]] = {}
        self.late_window = late_window

    def ask(self, user_id: int, chat_id: int, *, secret: bool, purpose: str) -> Question:
        key = (user_id, chat_id)
        previous = self._open.get(key)
        if previous is not None and not previous.future.done():
            previous.future.cancel()
        question = Question(user_id=user_id, chat_id=chat_id, secret=secret, purpose=purpose)
        self._open[key] = question
        return question

    def pending(self, user_id: int, chat_id: int) -> Question | None:
        question = self._open.get((user_id, chat_id))
        if question is None or question.future.done():
            return None
        return question

    def answer(self, user_id: int, chat_id: int, text: str, *, by: str = "") -> Question | None:
        """Deliver ``text`` to the open question of this user and chat; None when there is none."""
        question = self.pending(user_id, chat_id)
        if question is None:
            return None
        del self._open[(user_id, chat_id)]
        question.answered_by = by
        question.future.set_result(text)
        return question

    def late(self, user_id: int, chat_id: int) -> str | None:
        """The note for a late answer to a secret question closed recently, if any."""
        entry = self._late.get((user_id, chat_id))
        if entry is None:
            return None
        until, note = entry
        if time.monotonic() > until:
            del self._late[(user_id, chat_id)]
            return None
        return note

    def has_secret_pending(self, user_id: int) -> bool:
        return any(
            q.secret and not q.future.done() for (uid, _), q in self._open.items() if uid == user_id
        )

    def close(self, question: Question, *, late_note: str | None = None) -> None:
        """Stop waiting; ``late_note`` answers (and deletes) a secret that still arrives."""
        key = (question.user_id, question.chat_id)
        if self._open.get(key) is question:
            del self._open[key]
        if not question.future.done():
            question.future.cancel()
        if question.secret and late_note is not None:
            self._late[key] = (time.monotonic() + self.late_window, late_note)
