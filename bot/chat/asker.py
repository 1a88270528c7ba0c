"""Everything that waits on people: questions in a private chat, and yes/no buttons.

One person or several may be asked at once; the first answer wins, the others' prompts
say who answered, and an answer arriving late is still deleted if it may be a secret.
Secret answers come back as :class:`~bot.core.secret.Secret` and are deleted from the
chat on arrival by the chat surface. Buttons answer only the person who asked, expire,
and cannot be pressed twice (``bot.chat.confirm``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.chat.answers import Answers, Question
from bot.chat.confirm import Confirmations
from bot.chat.port import ChatPort, MessageRef
from bot.chat.verdict import Verdict
from bot.core.secret import Secret


@dataclass(frozen=True)
class Tidy:
    """What each prompt says once the asking is over: to the one who answered, to the
    others (``{by}`` is who answered), and when nobody did."""

    answered: str
    others: str
    expired: str


@dataclass(frozen=True)
class Answer:
    """The first answer to a question asked of several people.

    ``tidying`` edits the prompts; it is left running so that the edits go out while the
    answer is being used (a passphrase relayed), not before. Await it when done.
    """

    user_id: int
    by: str
    secret: Secret
    tidying: asyncio.Task[None]


class Asker:
    """Asks people and waits for them, through the chat port."""

    def __init__(self, chat: ChatPort, answers: Answers, confirmations: Confirmations) -> None:
        self.chat = chat
        self.answers = answers
        self.confirmations = confirmations

    async def ask_text(
        self, user_id: int, prompt: str, *, purpose: str, timeout: float
    ) -> str | None:
        """Ask in the user's private chat; their next text there is the answer (None: timed out)."""
        return await self._ask_one(user_id, prompt, secret=False, purpose=purpose, timeout=timeout)

    async def ask_secret(
        self, user_id: int, prompt: str, *, purpose: str, timeout: float
    ) -> Secret | None:
        """Like ``ask_text``; the answer is deleted from the chat at once and never logged."""
        text = await self._ask_one(user_id, prompt, secret=True, purpose=purpose, timeout=timeout)
        return None if text is None else Secret(text.encode())

    async def ask_first(
        self,
        people: Sequence[int],
        prompt: str,
        *,
        purpose: str,
        timeout: float,
        tidy: Tidy,
        late: Callable[[str | None], str],
    ) -> Answer | None:
        """Ask everyone a secret at once in their private chats; the first answer wins.

        ``late(by)`` is the note for an answer that arrives after someone else's (``by``)
        or after the question expired (None): that message is deleted too.
        """
        asked = await self._ask_all(people, prompt, purpose, late)
        winner: Question | None = None
        try:
            done, _ = await asyncio.wait(
                [q.future for q, _ in asked], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            winner = next(
                (q for q, _ in asked if q.future in done and not q.future.cancelled()), None
            )
        finally:
            note = late(winner.answered_by if winner is not None else None)
            for question, _ in asked:
                if question is not winner:
                    self.answers.close(question, late_note=note)
        tidying = asyncio.create_task(self._tidy(asked, winner, tidy), name=f"tidy-{purpose}")
        if winner is None:
            await tidying
            return None
        secret = Secret(winner.future.result().encode())
        return Answer(winner.user_id, winner.answered_by or str(winner.user_id), secret, tidying)

    async def confirm(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        yes: str,
        timeout: float,
        no: str = "Cancel",
        show_verdict: bool = True,
    ) -> Verdict:
        """Post ``text`` with buttons only ``user_id`` may press, and wait for the verdict.
        With ``show_verdict`` the message then says what was decided."""
        confirmation = self.confirmations.open(user_id)
        ref = await self.chat.post(chat_id, text, buttons=confirmation.buttons(yes, no))
        verdict = Verdict.of(await self.confirmations.wait(confirmation, timeout))
        if show_verdict and ref is not None:
            await self.chat.edit(ref, f"{_without_last_line(text)}\n\n{verdict.shown}")
        return verdict

    async def confirm_any(
        self, people: Sequence[int], text: str, *, yes: str, timeout: float
    ) -> int | None:
        """Offer each of ``people`` their own buttons; the first to press ``yes`` wins.

        Returns who pressed it (None: nobody did in time, or all said no); every message
        then says what became of the offer.
        """
        offers = {p: self.confirmations.open(p) for p in people}
        refs = await asyncio.gather(
            *(self.chat.post(p, text, buttons=c.buttons(yes)) for p, c in offers.items())
        )
        waiting = {c.future: p for p, c in offers.items()}
        pressed: int | None = None
        deadline = time.monotonic() + timeout
        try:
            while waiting and pressed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                done, _ = await asyncio.wait(
                    waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break
                for future in done:
                    person = waiting.pop(future)
                    if not future.cancelled() and future.result() is True:
                        pressed = person
        finally:
            for confirmation in offers.values():
                self.confirmations.close(confirmation)
        verdict = "✅ confirmed" if pressed is not None else "🚫 not done"
        await asyncio.gather(
            *(self.chat.edit(ref, f"{text}\n\n{verdict}") for ref in refs if ref is not None)
        )
        return pressed

    # -- the mechanics -----------------------------------------------------------------------

    async def _ask_one(
        self, user_id: int, prompt: str, *, secret: bool, purpose: str, timeout: float
    ) -> str | None:
        question = self.answers.ask(user_id, user_id, secret=secret, purpose=purpose)
        try:
            ref = await self.chat.post(user_id, prompt, force_reply=True)
            if ref is None:
                return None
            question.prompt_message_id = ref.message_id
            return await asyncio.wait_for(asyncio.shield(question.future), timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not question.future.cancelled():
                raise
            return None
        finally:
            # A secret typed after the prompt expired is still deleted, and its sender told.
            late = f"The question ({purpose}) had expired; I deleted your message."
            self.answers.close(question, late_note=late if secret and question.open else None)

    async def _ask_all(
        self, people: Sequence[int], prompt: str, purpose: str, late: Callable[[str | None], str]
    ) -> list[tuple[Question, MessageRef | None]]:
        questions = [self.answers.ask(p, p, secret=True, purpose=purpose) for p in people]
        self.answers.rivals(questions, late)
        refs = await asyncio.gather(*(self.chat.post(p, prompt, force_reply=True) for p in people))
        for question, ref in zip(questions, refs, strict=True):
            if ref is not None:
                question.prompt_message_id = ref.message_id
        return list(zip(questions, refs, strict=True))

    async def _tidy(
        self,
        asked: list[tuple[Question, MessageRef | None]],
        winner: Question | None,
        tidy: Tidy,
    ) -> None:
        edits = []
        for question, ref in asked:
            if ref is None:
                continue
            if winner is None:
                text = tidy.expired
            elif question is winner:
                text = tidy.answered
            else:
                text = tidy.others.format(by=winner.answered_by)
            edits.append(self.chat.edit(ref, text))
        await asyncio.gather(*edits)


def _without_last_line(text: str) -> str:
    """The confirmation's text without its closing instruction ("Confirm within …")."""
    head, sep, _ = text.rpartition("\n\n")
    return head if sep else text
