"""The access gate: runs before every handler, decides, audits, and stops what is refused.

It runs in handler group -1 as a ``TypeHandler`` and raises ``ApplicationHandlerStop`` for
anything refused, so no later handler ever sees an update from someone without the right.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from telegram import Message, Update, User
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationHandlerStop, TypeHandler

from bot.chat.access import Access
from bot.chat.answers import Answers
from bot.chat.commands import (
    Arg,
    CommandError,
    CommandSpec,
    CommandTable,
    Need,
    ParsedCommand,
    Right,
)
from bot.config.current import Current
from bot.config.inventory import Machine
from bot.flows.rollout.runner import ROLLOUT_KIND
from bot.remote.fleet import Fleet
from handlers.plumbing.registry import BotContext, Call
from handlers.plumbing.strangers import Strangers, Visitor
from store import Job, Store
from store.database import StoreUnavailable

log = logging.getLogger(__name__)
_USERNAME = re.compile(r"[A-Za-z0-9_]{1,32}")
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


class Refused(Exception):
    """A command the gate stops; the audit detail and, if any, the answer to send."""

    def __init__(self, detail: str, answer: str | None = None) -> None:
        self.detail = detail
        self.answer = answer
        super().__init__(detail)


class Gate:
    """Admins may do everything, operators act on their machines, strangers get one refusal.

    For a command it also resolves the argument (the machine, the job) and checks the
    command's needs, once, and leaves the handler a :class:`~handlers.plumbing.registry.Call`.
    """

    def __init__(
        self,
        *,
        access: Access,
        table: CommandTable,
        current: Current,
        store: Store,
        strangers: Strangers,
        answers: Answers,
        on_answer: Callable[[Update, BotContext], Awaitable[None]],
        fleet: Fleet,
        probes_enabled: bool = True,
    ) -> None:
        self.access = access
        self.table = table
        self.current = current
        self.store = store
        self.strangers = strangers
        self.answers = answers
        self.on_answer = on_answer
        self.fleet = fleet
        self.probes_enabled = probes_enabled

    async def __call__(self, update: Update, context: BotContext) -> None:
        try:
            await self._decide(update, context)
        except StoreUnavailable as exc:
            # Every decision is audited; one that cannot be recorded is not taken.
            log.warning("gate: the database is unavailable: %s", exc)
            user = update.effective_user
            if user is not None and self.access.is_known(user.id):
                await tell_store_unavailable(update, exc)
            raise ApplicationHandlerStop from None

    async def _decide(self, update: Update, context: BotContext) -> None:
        user = update.effective_user
        if user is None or user.is_bot:
            raise ApplicationHandlerStop
        if update.edited_message is not None or update.edited_channel_post is not None:
            raise ApplicationHandlerStop
        name = clean_username(user.username)
        if not self.access.is_known(user.id):
            # While polling, the door (handlers/plumbing/door.py) refuses strangers before this:
            # these came by webhook, or in an update the door does not read.
            action, machine = _describe(update, self._read_command(update, context.bot.username))
            chat = update.effective_chat
            query = update.callback_query
            self.strangers.refuse(
                Visitor(
                    user_id=user.id,
                    username=name,
                    action=action,
                    machine=machine,
                    chat_id=chat.id if chat is not None else None,
                    private=chat is not None and chat.type == ChatType.PRIVATE,
                    callback_query_id=query.id if query is not None else None,
                )
            )
            raise ApplicationHandlerStop
        if self._answers_a_secret(update, user.id, context.bot.username):
            # Handed over (and deleted) first, audited right after: a passphrase waits for
            # no database write (a commit may wait behind others, or for the disk).
            await self.on_answer(update, context)
            try:
                await self.store.audit(
                    user_id=user.id, username=name, action="answer", decision="allowed"
                )
            except StoreUnavailable as exc:
                log.warning("gate: an answer was handed over but not audited: %s", exc)
            raise ApplicationHandlerStop
        command = self._read_command(update, context.bot.username)
        action, machine = _describe(update, command)

        async def audit(decision: str, detail: str = "") -> None:
            await self.store.audit(
                user_id=user.id,
                username=name,
                action=action,
                machine=machine,
                decision=decision,
                detail=detail,
            )

        if isinstance(command, CommandError):
            await audit("refused", "bad input")
            if update.message is not None:
                await update.message.reply_text(str(command))
            raise ApplicationHandlerStop
        if command is not None and update.message is not None:
            try:
                context.call = await self._resolve(update, update.message, user, command)
            except Refused as refusal:
                await audit("refused", refusal.detail)
                if refusal.answer is not None:
                    await update.message.reply_text(refusal.answer)
                raise ApplicationHandlerStop from None
        await audit("allowed")

    async def _resolve(
        self, update: Update, message: Message, user: User, parsed: ParsedCommand
    ) -> Call:
        """The command's rights, argument and needs; Refused when one does not hold."""
        spec = parsed.spec
        user_id = user.id
        if not self.access.may_run(user_id, spec):
            raise Refused(f"needs {spec.right.value} right", f"/{spec.name} is for admins only.")
        if Need.PRIVATE_CHAT in spec.needs and message.chat.type != ChatType.PRIVATE:
            # Before the argument: a group learns nothing about which machines or jobs exist.
            raise Refused("not in a private chat", _private_only(spec))
        machine: Machine | None = None
        selection = parsed.selection or ()
        if "all" in selection and not self.access.is_admin(user_id):
            raise Refused("needs admin right for all", f"/{spec.name} all is for admins only.")
        if selection and not self.probes_enabled:
            raise Refused("example inventory", EXAMPLE_ONLY)
        if parsed.machine is not None:
            if spec.right is Right.MACHINE and not self.access.may_act(user_id, parsed.machine):
                known = parsed.machine in self.current.inventory.machines
                raise Refused(
                    "not an operator" if known else "unknown machine",
                    self._machine_refusal(user_id, parsed.machine),
                )
            machine = self.current.inventory.get(parsed.machine)
            if machine is None:
                raise Refused("unknown machine", "Unknown machine. /machines lists them.")
        if not self.probes_enabled and spec.arg in (Arg.MACHINE, Arg.MACHINES):
            raise Refused("example inventory", EXAMPLE_ONLY)
        job: Job | None = None
        if parsed.job_id is not None:
            job = await self.store.job(parsed.job_id)
            if job is None or not self._may_act_on_job(user_id, job):
                raise Refused(
                    f"job {parsed.job_id} unknown or not yours",
                    f"No job {parsed.job_id} of yours. /jobs lists them.",
                )
        if machine is not None:
            await self._check_needs(spec, machine)
        return Call(
            update=update,
            message=message,
            user=user,
            spec=spec,
            args=parsed.args,
            machine=machine,
            job=job,
            selection=selection,
        )

    def _may_act_on_job(self, user_id: int, job: Job) -> bool:
        """A job of one machine: its operators and admins; a rollout (its ``machine`` is
        the selection's label): the person who started it and admins."""
        if job.kind == ROLLOUT_KIND:
            return job.user_id == user_id or self.access.is_admin(user_id)
        return self.access.may_act(user_id, job.machine)

    async def _check_needs(self, spec: CommandSpec, m: Machine) -> None:
        """What the command needs of the machine and the chat (its ``needs``)."""
        needs = spec.needs
        if Need.LUKS in needs and not m.luks:
            raise Refused("no LUKS disk", f"{m.name} has no LUKS disk: nothing to unlock.")
        if needs & {Need.PINNED, Need.INSTALLED_BY_BOT}:
            known = await self.store.machine(m.name)
            pins = await self.fleet.pins(m)
            if Need.PINNED in needs:
                if pins.conflicts:
                    raise Refused(
                        "keys contradict",
                        f"{m.name}'s keys contradict each other ({'; '.join(pins.conflicts)}): "
                        "correct the inventory or sops; deploybot check shows them.",
                    )
                if not pins.system:
                    raise Refused(
                        "no pinned host key",
                        f"{m.name} has no pinned host key: /adopt {m.name} pins the key it "
                        f"presents once you confirm it, /deploy {m.name} installs it.",
                    )
            # A machine installed by hand whose key is pinned is installed too: /deploy
            # refuses to erase it and points here.
            if Need.INSTALLED_BY_BOT in needs and not (known.installed_at or pins.system):
                raise Refused(
                    "not installed by the bot",
                    f"{m.name} was not installed by this bot: use /deploy {m.name}.",
                )

    def _read_command(
        self, update: Update, bot_username: str | None
    ) -> ParsedCommand | CommandError | None:
        """The command a message carries, parsed once for the decision and its audit entry."""
        text = update.message.text if update.message is not None else None
        return self.read_command(text, bot_username)

    def read_command(
        self, text: str | None, bot_username: str | None
    ) -> ParsedCommand | CommandError | None:
        """The command a message's text is, if it starts with ``/``."""
        if text is None or not text.startswith("/"):
            return None
        try:
            return self.table.parse(text, bot_username)
        except CommandError as exc:
            return exc

    def _machine_refusal(self, user_id: int, machine: str) -> str:
        if self.access.is_admin(user_id):
            return f"Unknown machine {machine!r}. /machines lists them."
        # Operators of other machines learn nothing about whether the name exists.
        return f"You may not act on {machine!r}: it is unknown or not one of yours."

    def _answers_a_secret(self, update: Update, user_id: int, bot_username: str | None) -> bool:
        """Whether a private message goes to an open secret question, whatever it looks like.

        A passphrase may start with ``/``: then it is no command ("Unknown command /…" would
        echo it and leave it in the chat). A reply to the prompt always is the answer; so is
        any text that is not a well-formed command of the table. A well-formed command
        (``/unlock beta`` while alpha waits) stays a command.
        """
        message = update.message
        if message is None or message.text is None or message.chat.type != ChatType.PRIVATE:
            return False
        questions = [q for q in self.answers.questions(user_id, message.chat.id) if q.secret]
        if not questions:
            return False
        replied = message.reply_to_message
        if replied is not None and any(
            q.prompt_message_id == replied.message_id for q in questions
        ):
            return True
        return not isinstance(self._read_command(update, bot_username), ParsedCommand)


def _private_only(spec: CommandSpec) -> str:
    """The one line a group gets for a command answered only in private chats."""
    return f"/{spec.name} works only in our private chat: here every member would see it."


def clean_username(username: str | None) -> str:
    """The username if it is one (letters, digits, _), else "": display names are the
    sender's to choose (HTML, bidi overrides, fake audit lines), so only the id and the
    username are kept."""
    return username if username is not None and _USERNAME.fullmatch(username) else ""


def _describe(update: Update, command: ParsedCommand | CommandError | None) -> tuple[str, str]:
    """A short audit label for the update, and the machine it names (if any)."""
    query, message = update.callback_query, update.message
    return describe(
        button=(query.data or "") if query is not None else None,
        message=message is not None,
        text=message is not None and message.text is not None,
        command=command,
    )


def describe(
    *, button: str | None, message: bool, text: bool, command: ParsedCommand | CommandError | None
) -> tuple[str, str]:
    """The audit label of a button press (its callback data), a message (with text or
    not) or another update, and the machine it names (if any)."""
    if button is not None:
        return f"button:{button.split(':', 1)[0][:24]}", ""
    if isinstance(command, CommandError):
        return "command:invalid", ""
    if command is not None:
        return f"/{command.spec.name}", command.machine or ""
    if not message:
        return "update", ""
    return ("message" if text else "non-text"), ""


def register(application: Application, gate: Gate) -> None:  # type: ignore[type-arg]
    application.add_handler(TypeHandler(Update, gate), group=-1)
