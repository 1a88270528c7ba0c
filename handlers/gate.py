"""The access gate: runs before every handler, decides, audits, and stops what is refused.

It runs in handler group -1 as a ``TypeHandler`` and raises ``ApplicationHandlerStop`` for
anything refused, so no later handler ever sees an update from someone without the right.
"""

from __future__ import annotations

import logging
import time

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationHandlerStop, ContextTypes, TypeHandler

from bot.chat.commands import Arg, CommandError, ParsedCommand, Right, parse_command
from bot.flows.services import Services
from store.database import StoreUnavailable

log = logging.getLogger(__name__)
REFUSAL_INTERVAL = 3600.0
EXAMPLE_ONLY = (
    "These are the example inventory's machines, not yours: copy machines.example.toml to "
    "machines.toml and describe your own machines there."
)


def store_unavailable_text(exc: Exception) -> str:
    return (
        f"⚠️ My database is unavailable right now ({exc}), so I did nothing. "
        "Try again in a minute; if it lasts, check the bot's host (another program holding "
        "the database, or a full disk)."
    )


async def tell_store_unavailable(update: Update, exc: Exception) -> None:
    """Answer the update that could not be handled because the database is unavailable."""
    try:
        if update.callback_query is not None:
            await update.callback_query.answer("My database is unavailable; try again soon.")
        elif update.effective_chat is not None:
            await update.get_bot().send_message(
                update.effective_chat.id, store_unavailable_text(exc)
            )
    except TelegramError as error:
        log.warning("could not say that the database is unavailable: %s", error)


def refusal_text(user_id: int) -> str:
    return (
        f"Not authorised. Your Telegram user id is {user_id}; "
        "an admin can add it to DEPLOYBOT_ADMINS or a machine's operators."
    )


class Gate:
    """Admins may do everything, operators act on their machines, strangers get one refusal."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._last_refusal: dict[int, float] = {}

    async def __call__(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        try:
            await self._decide(update, context)
        except StoreUnavailable as exc:
            # Every decision is audited; one that cannot be recorded is not taken.
            log.warning("gate: the database is unavailable: %s", exc)
            user = update.effective_user
            if user is not None and self.services.access.is_known(user.id):
                await tell_store_unavailable(update, exc)
            raise ApplicationHandlerStop from None

    async def _decide(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        if user is None or user.is_bot:
            raise ApplicationHandlerStop
        if update.edited_message is not None or update.edited_channel_post is not None:
            raise ApplicationHandlerStop
        access = self.services.access
        name = user.username or user.first_name or ""
        command = _read_command(update, context.bot.username)
        action, machine = _describe(update, command)

        async def audit(decision: str, detail: str = "") -> None:
            await self.services.store.audit(
                user_id=user.id,
                username=name,
                action=action,
                machine=machine,
                decision=decision,
                detail=detail,
            )

        if not access.is_known(user.id):
            await audit("refused", "not an admin or operator")
            await self._refuse_stranger(update, user.id)
            raise ApplicationHandlerStop
        if isinstance(command, CommandError):
            await audit("refused", "bad input")
            if update.message is not None:
                await update.message.reply_text(str(command))
            raise ApplicationHandlerStop
        if command is not None:
            parsed = command
            spec = parsed.spec
            if spec.name not in self.services.commands:
                await audit("refused", "not available")
                if update.message is not None:
                    await update.message.reply_text(
                        f"/{spec.name} is not available in this version."
                    )
                raise ApplicationHandlerStop
            if not access.may_run(user.id, spec):
                await audit("refused", f"needs {spec.right.value} right")
                if update.message is not None:
                    await update.message.reply_text(f"/{spec.name} is for admins only.")
                raise ApplicationHandlerStop
            machine_arg = parsed.machine if spec.right is Right.MACHINE else None
            if machine_arg is not None and not access.may_act(user.id, machine_arg):
                known = machine_arg in self.services.inventory.machines
                await audit("refused", "not an operator" if known else "unknown machine")
                if update.message is not None:
                    await update.message.reply_text(self._machine_refusal(user.id, machine_arg))
                raise ApplicationHandlerStop
            if not self.services.probes_enabled and spec.arg is Arg.MACHINE:
                await audit("refused", "example inventory")
                if update.message is not None:
                    await update.message.reply_text(EXAMPLE_ONLY)
                raise ApplicationHandlerStop
        await audit("allowed")

    def _machine_refusal(self, user_id: int, machine: str) -> str:
        if self.services.access.is_admin(user_id):
            return f"Unknown machine {machine!r}. /machines lists them."
        # Operators of other machines learn nothing about whether the name exists.
        return f"You may not act on {machine!r}: it is unknown or not one of yours."

    async def _refuse_stranger(self, update: Update, user_id: int) -> None:
        if update.callback_query is not None:
            await update.callback_query.answer("Not authorised.")
        now = time.monotonic()
        last = self._last_refusal.get(user_id)
        if last is not None and now - last < REFUSAL_INTERVAL:
            return
        self._last_refusal[user_id] = now
        chat = update.effective_chat
        if chat is not None:
            await update.get_bot().send_message(chat.id, refusal_text(user_id))


def _read_command(update: Update, bot_username: str | None) -> ParsedCommand | CommandError | None:
    """The command a message carries, parsed once for the decision and its audit entry."""
    text = update.message.text if update.message is not None else None
    if text is None or not text.startswith("/"):
        return None
    try:
        return parse_command(text, bot_username)
    except CommandError as exc:
        return exc


def _describe(update: Update, command: ParsedCommand | CommandError | None) -> tuple[str, str]:
    """A short audit label for the update, and the machine it names (if any)."""
    if update.callback_query is not None:
        data = update.callback_query.data or ""
        return f"button:{data.split(':', 1)[0][:24]}", ""
    if isinstance(command, CommandError):
        return "command:invalid", ""
    if command is not None:
        return f"/{command.spec.name}", command.machine or ""
    message = update.message
    if message is None:
        return "update", ""
    return ("message" if message.text is not None else "non-text"), ""


def register(application: Application, services: Services) -> None:  # type: ignore[type-arg]
    application.add_handler(TypeHandler(Update, Gate(services)), group=-1)
