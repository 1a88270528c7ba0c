"""Questions the bot is waiting to have answered in a private chat.

While a question is open, the user's next plain text message in that chat (or a reply to the
prompt) is its answer. The engine awaits a future; the chat surface routes messages here.
Several questions may be open in one chat at once (two machines waiting in their initrds
after the same scheduled reboot): then only a reply to a prompt says which one it answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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
    #: The same question asked of other people at once (``Answers.rivals``).
    rivals: list[Question] = field(default_factory=list)
    #: The note for a late answer to a rival, from who answered this one.
    rival_note: Callable[[str], str] | None = None

    @property
    def open(self) -> bool:
        return not self.future.done()


class Answers:
    """The open questions per user and chat; asking again for the same purpose replaces."""

    def __init__(self, late_window: float = 600.0) -> None:
        self._open: dict[tuple[int, int], list[Question]] = {}
        # Secret questions closed early (someone else answered, or it expired): a late answer
        # is still a passphrase typed into a chat, so it is deleted and the sender told why.
        self._late: dict[tuple[int, int], tuple[float, str]] = {}
        self.late_window = late_window

    def ask(self, user_id: int, chat_id: int, *, secret: bool, purpose: str) -> Question:
        key = (user_id, chat_id)
        for previous in self.questions(user_id, chat_id):
            if previous.purpose == purpose:
                self.close(previous)
        question = Question(user_id=user_id, chat_id=chat_id, secret=secret, purpose=purpose)
        self._open.setdefault(key, []).append(question)
        return question

    def rivals(self, questions: list[Question], late_note: Callable[[str], str]) -> None:
        """The same question asked of several people: the first answer closes the others
        there and then, so a second answer handled right after it (the same batch of
        updates) is late, with ``late_note(by)``, and never a rival answer."""
        for question in questions:
            question.rivals = [other for other in questions if other is not question]
            question.rival_note = late_note

    def questions(self, user_id: int, chat_id: int) -> list[Question]:
        """The open questions in this chat, oldest first."""
        return [q for q in self._open.get((user_id, chat_id), []) if q.open]

    def pending(self, user_id: int, chat_id: int) -> Question | None:
        """The newest open question in this chat, if any."""
        found = self.questions(user_id, chat_id)
        return found[-1] if found else None

    def choose(self, user_id: int, chat_id: int, reply_to: int | None) -> Question | None:
        """The question a message answers: the prompt it replies to, else the only open one."""
        found = self.questions(user_id, chat_id)
        if reply_to is not None:
            for question in found:
                if question.prompt_message_id == reply_to:
                    return question
        return found[0] if len(found) == 1 else None

    def answer(
        self,
        user_id: int,
        chat_id: int,
        text: str,
        *,
        by: str = "",
        question: Question | None = None,
    ) -> Question | None:
        """Deliver ``text`` to ``question`` (default: the only open one); None if it is closed."""
        target = question or self.choose(user_id, chat_id, None)
        if target is None or not target.open:
            return None
        self._forget(target)
        target.answered_by = by
        target.future.set_result(text)
        note = target.rival_note(by) if target.rival_note is not None else None
        for rival in target.rivals:
            self.close(rival, late_note=note)
        return target

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
            q.secret and q.open
            for (uid, _), questions in self._open.items()
            if uid == user_id
            for q in questions
        )

    def close(self, question: Question, *, late_note: str | None = None) -> None:
        """Stop waiting; ``late_note`` answers (and deletes) a secret that still arrives."""
        self._forget(question)
        if question.open:
            question.future.cancel()
        if question.secret and late_note is not None:
            key = (question.user_id, question.chat_id)
            self._late[key] = (time.monotonic() + self.late_window, late_note)

    def _forget(self, question: Question) -> None:
        key = (question.user_id, question.chat_id)
        rest = [q for q in self._open.get(key, []) if q is not question and q.open]
        if rest:
            self._open[key] = rest
        else:
            self._open.pop(key, None)
