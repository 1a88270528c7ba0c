"""The Asker without a lab: first answer wins, late answers are told, prompts are tidied,
buttons answer only their asker, expire and cannot be pressed twice.

The chat port here is a small recording implementation of the port's protocol; the
Asker, the open questions and the confirmations are the bot's own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.chat.answers import Answers
from bot.chat.asker import Asker, Tidy
from bot.chat.confirm import Confirmations, Press
from bot.chat.port import Keyboard, MessageRef
from bot.chat.verdict import Verdict
from tests.waiting import eventually

TIDY = Tidy(answered="received", others="{by} answered", expired="expired")


@dataclass
class RecordingChat:
    """Keeps what was posted and edited, per chat, as Telegram would show it."""

    texts: dict[MessageRef, str] = field(default_factory=dict)
    buttons: dict[MessageRef, Keyboard] = field(default_factory=dict)
    next_id: int = 1

    async def post(
        self, chat_id: int, text: str, *, buttons: Keyboard = (), force_reply: bool = False
    ) -> MessageRef | None:
        ref = MessageRef(chat_id, self.next_id)
        self.next_id += 1
        self.texts[ref] = text
        self.buttons[ref] = buttons
        return ref

    async def edit(self, ref: MessageRef, text: str, *, buttons: Keyboard = ()) -> bool:
        self.texts[ref] = text
        self.buttons[ref] = buttons
        return True

    async def delete(self, ref: MessageRef) -> bool:
        return self.texts.pop(ref, None) is not None

    async def send_file(
        self, chat_id: int, filename: str, data: bytes, *, caption: str = ""
    ) -> bool:
        return True

    async def send_photo(self, chat_id: int, png: bytes, *, caption: str = "") -> bool:
        return True

    def in_chat(self, chat_id: int) -> list[str]:
        return [
            text
            for ref, text in sorted(self.texts.items(), key=lambda i: i[0].message_id)
            if ref.chat_id == chat_id
        ]

    def data(self, chat_id: int, label: str) -> str:
        for ref, rows in self.buttons.items():
            if ref.chat_id != chat_id:
                continue
            for row in rows:
                for button in row:
                    if button.label == label:
                        return button.data
        raise AssertionError(f"no button {label!r} in chat {chat_id}")


def make() -> tuple[Asker, RecordingChat, Answers, Confirmations]:
    chat, answers, confirmations = RecordingChat(), Answers(), Confirmations()
    return Asker(chat, answers, confirmations), chat, answers, confirmations


def late(by: str | None) -> str:
    return f"late after {by}" if by else "late after expiry"


async def test_first_answer_wins_and_the_others_are_told() -> None:
    asker, chat, answers, _ = make()
    asking = asyncio.create_task(
        asker.ask_first(
            [1, 2, 3], "passphrase?", purpose="unlock m", timeout=10, tidy=TIDY, late=late
        )
    )
    await eventually(lambda: _true(all(answers.questions(p, p) for p in (1, 2, 3))), what="prompts")
    answers.answer(2, 2, "hunter2", by="@two")
    answer = await asking
    assert answer is not None
    assert (answer.user_id, answer.by) == (2, "@two")
    assert answer.secret.reveal() == b"hunter2"
    await answer.tidying
    assert chat.in_chat(2) == ["received"]
    assert chat.in_chat(1) == ["@two answered"]
    assert chat.in_chat(3) == ["@two answered"]
    # The others' questions are closed; an answer that still arrives is deleted and explained.
    assert not answers.questions(1, 1)
    assert answers.late(1, 1) == "late after @two"
    assert answers.answer(1, 1, "too late") is None
    answer.secret.wipe()


async def test_a_second_answer_right_after_the_first_is_late() -> None:
    """Two answers handled back to back (one batch of updates): the first closes the other
    questions there and then, before the asker has run again."""
    asker, _, answers, _ = make()
    asking = asyncio.create_task(
        asker.ask_first([1, 2], "passphrase?", purpose="unlock m", timeout=10, tidy=TIDY, late=late)
    )
    await eventually(lambda: _true(all(answers.questions(p, p) for p in (1, 2))), what="prompts")
    assert answers.answer(1, 1, "hunter2", by="@one") is not None
    assert answers.answer(2, 2, "hunter2") is None
    assert answers.late(2, 2) == "late after @one"
    answer = await asking
    assert answer is not None
    assert answer.user_id == 1
    await answer.tidying
    answer.secret.wipe()


async def test_nobody_answers_in_time() -> None:
    asker, chat, answers, _ = make()
    answer = await asker.ask_first(
        [1, 2], "passphrase?", purpose="unlock m", timeout=0.2, tidy=TIDY, late=late
    )
    assert answer is None
    assert chat.in_chat(1) == ["expired"]
    assert chat.in_chat(2) == ["expired"]
    assert answers.late(2, 2) == "late after expiry"


async def test_a_secret_question_of_one_person() -> None:
    asker, chat, answers, _ = make()
    asking = asyncio.create_task(asker.ask_secret(7, "new passphrase?", purpose="disk", timeout=10))
    await eventually(lambda: _true(bool(answers.questions(7, 7))), what="the prompt")
    answers.answer(7, 7, "s3cret")
    secret = await asking
    assert secret is not None
    assert secret.reveal() == b"s3cret"
    assert repr(secret) == "Secret(***)"
    assert chat.in_chat(7) == ["new passphrase?"]


async def test_an_unanswered_secret_expires_and_a_late_answer_is_deleted() -> None:
    asker, _, answers, _ = make()
    assert await asker.ask_secret(7, "new passphrase?", purpose="disk", timeout=0.1) is None
    assert answers.late(7, 7) is not None


async def test_buttons_answer_only_their_asker_once() -> None:
    asker, chat, _, confirmations = make()
    asking = asyncio.create_task(
        asker.confirm(5, 1, "Erase it?\n\nConfirm within 2 min.", yes="Erase", timeout=10)
    )
    await eventually(lambda: _true(bool(chat.in_chat(5))), what="the question")
    yes = chat.data(5, "Erase")
    assert len(yes.encode()) <= 64
    assert confirmations.press(yes, 2) is Press.NOT_YOURS
    assert not asking.done()
    assert confirmations.press(yes, 1) is Press.ACCEPTED
    assert await asking is Verdict.CONFIRMED
    assert confirmations.press(yes, 1) is Press.EXPIRED  # replayed
    assert chat.in_chat(5) == ["Erase it?\n\n✅ confirmed"]


async def test_forged_button_data_answers_nothing() -> None:
    asker, chat, _, confirmations = make()
    asking = asyncio.create_task(asker.confirm(5, 1, "Reboot?", yes="Reboot", timeout=10))
    await eventually(lambda: _true(bool(chat.in_chat(5))), what="the question")
    token = chat.data(5, "Reboot").split(":")[1]
    for forged in (f"cf:{token}x:y", "cf::y", f"cf:{token}:maybe", "cf", "", "x" * 64):
        assert confirmations.press(forged, 1) is Press.EXPIRED
    assert confirmations.press(chat.data(5, "Cancel"), 1) is Press.ACCEPTED
    assert await asking is Verdict.CANCELLED


async def test_a_confirmation_expires() -> None:
    asker, chat, _, confirmations = make()
    verdict = await asker.confirm(5, 1, "Reboot?", yes="Reboot", timeout=0.1, show_verdict=False)
    assert verdict is Verdict.EXPIRED
    assert confirmations.press(chat.data(5, "Reboot"), 1) is Press.EXPIRED
    assert chat.in_chat(5) == ["Reboot?"]


async def _true(value: bool) -> bool:
    return value
