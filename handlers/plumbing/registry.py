"""Commands declared once, beside their handlers, as errbot's ``@botcmd`` does.

``@command`` puts a :class:`~bot.chat.commands.CommandSpec` on a handler method; the
composition root collects them into one :class:`~bot.chat.commands.CommandTable` for
the gate, ``/help`` and Telegram's menu. The gate authorises each command, resolves its
argument (the machine, the job) once, and hands the handler a :class:`Call`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from telegram import Message, Update, User
from telegram.ext import Application, CallbackContext, CommandHandler, ExtBot

from bot.chat.commands import Arg, CommandSpec, CommandTable, Need, Right
from bot.config.inventory import Machine
from store import Job

SPEC_ATTRIBUTE = "__deploybot_command__"
F = TypeVar("F", bound=Callable[..., Awaitable[None]])


@dataclass(frozen=True)
class Call:
    """One command, authorised by the gate, its argument resolved."""

    update: Update
    message: Message
    user: User
    spec: CommandSpec
    args: tuple[str, ...] = ()
    machine: Machine | None = None
    job: Job | None = None
    #: The words of a command naming several machines (a rollout), resolved by its flow.
    selection: tuple[str, ...] = ()

    @property
    def named_machine(self) -> Machine:
        """The machine an ``Arg.MACHINE`` command names: the gate resolved it before."""
        if self.machine is None:
            raise LookupError(f"/{self.spec.name} names no machine")
        return self.machine

    @property
    def named_job(self) -> Job:
        """The job an ``Arg.JOB`` command names: the gate resolved it before."""
        if self.job is None:
            raise LookupError(f"/{self.spec.name} names no job")
        return self.job

    @property
    def chat_id(self) -> int:
        return self.message.chat.id

    @property
    def by(self) -> str:
        """How other messages name the person: ``@username``, else the id."""
        return f"@{self.user.username}" if self.user.username else str(self.user.id)

    async def reply(self, text: str) -> None:
        await self.message.reply_text(text)


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """PTB's context with the gate's :class:`Call`: one context serves every handler
    group of an update, so the handler finds what the gate resolved."""

    call: Call | None = None


def command(
    name: str,
    summary: str,
    *,
    arg: Arg = Arg.NONE,
    right: Right = Right.USER,
    needs: Iterable[Need] = (),
) -> Callable[[F], F]:
    """Declare a handler method as the command ``/name``."""
    spec = CommandSpec(name, arg, right, summary, frozenset(needs))

    def mark(method: F) -> F:
        setattr(method, SPEC_ATTRIBUTE, spec)
        return method

    return mark


def specs_of(owner: object) -> list[tuple[CommandSpec, Callable[[Call], Awaitable[None]]]]:
    """The commands a handler object (or class) declares, in source order."""
    found = []
    for attribute in vars(type(owner) if not isinstance(owner, type) else owner).values():
        spec = getattr(attribute, SPEC_ATTRIBUTE, None)
        if isinstance(spec, CommandSpec):
            bound = getattr(owner, attribute.__name__)
            found.append((spec, bound))
    return found


def table_of(owners: Iterable[object]) -> CommandTable:
    return CommandTable(spec for owner in owners for spec, _ in specs_of(owner))


def install(
    application: Application[Any, Any, Any, Any, Any, Any], owners: Iterable[object]
) -> None:
    """One CommandHandler per declared command, each handed the gate's Call."""
    for owner in owners:
        for spec, callback in specs_of(owner):
            application.add_handler(CommandHandler(spec.name, _with_call(callback)))


def _with_call(
    callback: Callable[[Call], Awaitable[None]],
) -> Callable[[Update, BotContext], Coroutine[Any, Any, None]]:
    async def handle(update: Update, context: BotContext) -> None:
        call = context.call
        if call is None:  # the gate lets no command through without resolving it
            return
        await callback(call)

    return handle
