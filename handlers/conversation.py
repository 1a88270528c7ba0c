"""Plain text messages: answers to the bot's questions, and passphrases sent where they
must not be.
"""

from __future__ import annotations

import logging

from telegram import Message, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bot.services import Services
from handlers.common import sender

log = logging.getLogger(__name__)


class Conversation:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        user = update.effective_user
        if message is None or user is None or message.text is None:
            return
        if message.chat.type != ChatType.PRIVATE:
            await self._in_group(update)
            return
        question = self.s.answers.pending(user.id, message.chat.id)
        if question is None:
            await message.reply_text(
                "I am not waiting for an answer from you. /help lists the commands."
            )
            return
        if question.secret:
            # Deleting first: the passphrase should be on screen for as short a time as possible.
            await self._delete(message, context)
        by = f"@{user.username}" if user.username else user.first_name
        self.s.answers.answer(user.id, message.chat.id, message.text, by=by)

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
        question = self.s.answers.pending(user.id, message.chat.id)
        if question is not None and not question.secret and message.text is not None:
            self.s.answers.answer(user.id, message.chat.id, message.text)
            return
        if not self.s.answers.has_secret_pending(user.id):
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


def register(application: Application, services: Services) -> None:  # type: ignore[type-arg]
    conversation = Conversation(services)
    application.add_handler(
        MessageHandler(
            filters.TEXT & ~filters.COMMAND & filters.UpdateType.MESSAGE, conversation.on_text
        )
    )
