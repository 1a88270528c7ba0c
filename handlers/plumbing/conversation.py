"""Plain text messages: answers to the bot's questions, and passphrases sent where they
must not be.
"""

from __future__ import annotations

import logging

from telegram import Message, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bot.chat.answers import Answers
from handlers.plumbing.common import sender

log = logging.getLogger(__name__)
# python-telegram-bot's DEBUG records that carry whole incoming updates, by logger and format.
_UPDATE_DUMPS = {
    "telegram.Bot": "Call to Bot API endpoint `%s` finished with return value `%s`",
    "telegram.ext.ExtBot": "Call to Bot API endpoint `%s` finished with return value `%s`",
    "telegram.ext.Application": "Processing update %s",
}


class HideUpdates(logging.Filter):
    """Keeps incoming messages out of python-telegram-bot's DEBUG logs.

    At DEBUG the library logs every update it fetches and processes, message text included,
    and that text may be a passphrase. The record stays, its payload goes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != _UPDATE_DUMPS.get(record.name) or not isinstance(record.args, tuple):
            return True
        if record.msg.startswith("Processing"):
            update = record.args[0] if record.args else None
            record.args = (f"#{getattr(update, 'update_id', '?')} (content not logged)",)
        elif record.args and record.args[0] == "getUpdates":
            record.args = (record.args[0], "(updates not logged: they may hold passphrases)")
        return True


def hide_updates_in_logs() -> None:
    """Install ``HideUpdates`` once on each logger that dumps updates."""
    for name in _UPDATE_DUMPS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, HideUpdates) for f in logger.filters):
            logger.addFilter(HideUpdates())


class Conversation:
    """Routes plain text to the question it answers; deletes secrets on arrival."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        user = update.effective_user
        if message is None or user is None or message.text is None:
            return
        if message.chat.type != ChatType.PRIVATE:
            await self._in_group(update)
            return
        chat_id = message.chat.id
        if not self.answers.questions(user.id, chat_id):
            await self._unexpected(message, context, user.id)
            return
        replied = message.reply_to_message
        question = self.answers.choose(
            user.id, chat_id, replied.message_id if replied is not None else None
        )
        if question is None:
            await self._ambiguous(message, context, user.id)
            return
        by = f"@{user.username}" if user.username else user.first_name
        # Handing the answer over is synchronous, so the flow (the relay to an initrd) starts
        # while the deletion below is still on its way.
        self.answers.answer(user.id, chat_id, message.text, by=by, question=question)
        if question.secret:
            await self._delete(message, context)

    async def _unexpected(
        self, message: Message, context: ContextTypes.DEFAULT_TYPE, user_id: int
    ) -> None:
        """No open question: a late passphrase is deleted and explained, anything else shrugged."""
        note = self.answers.late(user_id, message.chat.id)
        if note is None and _answers_a_passphrase_prompt(message):
            # A reply to a prompt this process no longer knows (it restarted, or the prompt
            # was answered long ago): it is probably a passphrase, so it does not stay.
            note = "That prompt is no longer open; I deleted your message. Nothing was sent."
        if note is None:
            await message.reply_text(
                "I am not waiting for an answer from you. /help lists the commands."
            )
            return
        await self._delete(message, context)
        await context.bot.send_message(message.chat.id, note)

    async def _ambiguous(
        self, message: Message, context: ContextTypes.DEFAULT_TYPE, user_id: int
    ) -> None:
        """Several open questions and no reply to one: guessing could send a passphrase to the
        wrong machine, so the message is dropped (deleted if it may be a secret)."""
        questions = self.answers.questions(user_id, message.chat.id)
        if any(q.secret for q in questions):
            await self._delete(message, context)
        waiting = ", ".join(q.purpose for q in questions)
        await context.bot.send_message(
            message.chat.id,
            f"I am waiting for several answers from you ({waiting}). Reply to the prompt you "
            "are answering, and send it again.",
        )

    async def _delete(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        try:
            await message.delete()
        except TelegramError as exc:
            log.warning("could not delete a secret answer in chat %s: %s", message.chat.id, exc)
            await context.bot.send_message(
                message.chat.id, "I could not delete your message: delete it yourself, please."
            )

    async def _in_group(self, update: Update) -> None:
        message, user = sender(update)
        question = self.answers.pending(user.id, message.chat.id)
        if question is not None and not question.secret and message.text is not None:
            self.answers.answer(user.id, message.chat.id, message.text)
            return
        if not self.answers.has_secret_pending(user.id):
            return
        try:
            await message.delete()
            deleted = "I deleted it; "
        except TelegramError:
            deleted = "I could not delete it — delete it now and change that passphrase; "
        await message.chat.send_message(
            f"A passphrase is never accepted in a group chat. {deleted}"
            "answer me in our private chat."
        )


def _answers_a_passphrase_prompt(message: Message) -> bool:
    replied = message.reply_to_message
    return (
        replied is not None
        and replied.from_user is not None
        and replied.from_user.is_bot
        and "passphrase" in (replied.text or "")
    )


def register(application: Application, conversation: Conversation) -> None:  # type: ignore[type-arg]
    hide_updates_in_logs()
    application.add_handler(
        MessageHandler(
            filters.TEXT & ~filters.COMMAND & filters.UpdateType.MESSAGE, conversation.on_text
        )
    )
