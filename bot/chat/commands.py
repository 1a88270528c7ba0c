"""Chat commands as data: name, argument, the right they need, their preconditions.

Each command is declared once, beside its handler (``handlers/plumbing/registry.py``'s
``@command``); the gate, ``/help`` and Telegram's command menu all read the same
:class:`CommandTable`, so they never disagree. Nothing here knows about Telegram.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

MAX_MESSAGE = 1000
MAX_ARG = 64
MAX_JOB_DIGITS = 12
MAX_MACHINES = 100
_ARG = re.compile(r"^#?[A-Za-z0-9_.:@-]+$")


class Arg(Enum):
    """What a command takes after its name."""

    NONE = "none"
    MACHINE = "machine"
    #: One machine, or several: names, ``tag:<tag>``, ``all`` (a rollout).
    MACHINES = "machines"
    OPTIONAL_MACHINE = "optional machine"
    JOB = "job"
    # Nothing (all of the asker's machines), a machine, or ``tag:NAME``: those tagged NAME.
    SELECTION = "optional machine or tag"


TAG_PREFIX = "tag:"


def tag_in(word: str) -> str | None:
    """``web`` of ``tag:web`` (the prefix in any case, as people type it), else None: the
    one rule ``/report`` and the rollouts read a tag by."""
    if word[: len(TAG_PREFIX)].lower() == TAG_PREFIX:
        return word[len(TAG_PREFIX) :]
    return None


class Right(Enum):
    """Who may run a command: any known user, the machine's operators, or admins only.

    ``MACHINE`` is judged on the named machine, or on the job's machine for a job.
    """

    USER = "user"
    MACHINE = "machine"
    ADMIN = "admin"


class Need(Enum):
    """What must hold of the named machine (or the chat) before the handler runs."""

    LUKS = "a LUKS disk"
    PINNED = "a pinned host key"
    INSTALLED_BY_BOT = "an install by this bot"
    PRIVATE_CHAT = "our private chat"


@dataclass(frozen=True)
class CommandSpec:
    name: str
    arg: Arg
    right: Right
    summary: str
    needs: frozenset[Need] = frozenset()

    @property
    def usage(self) -> str:
        suffix = {
            Arg.NONE: "",
            Arg.MACHINE: " <machine>",
            Arg.MACHINES: " <machine…>",
            Arg.OPTIONAL_MACHINE: " [machine]",
            Arg.JOB: " <job>",
            Arg.SELECTION: " [machine|tag:…]",
        }[self.arg]
        return f"/{self.name}{suffix}"


class CommandError(ValueError):
    """The message cannot be a command; the text is the one-line answer to send."""


@dataclass(frozen=True)
class ParsedCommand:
    spec: CommandSpec
    args: tuple[str, ...]

    @property
    def machine(self) -> str | None:
        if self.spec.arg in (Arg.MACHINE, Arg.OPTIONAL_MACHINE) and self.args:
            return self.args[0]
        if self.spec.arg is Arg.SELECTION and self.args and self.tag is None:
            return self.args[0]
        if self.spec.arg is Arg.MACHINES and self.selection is None:
            return self.args[0]
        return None

    @property
    def tag(self) -> str | None:
        """``web`` of ``/report tag:web``; the gate resolves no machine for it."""
        if self.spec.arg is Arg.SELECTION and self.args:
            return tag_in(self.args[0])
        return None

    @property
    def selection(self) -> tuple[str, ...] | None:
        """The words of a command naming several machines (``tag:web``, ``all``, ``a b``)."""
        if self.spec.arg is not Arg.MACHINES:
            return None
        many = len(self.args) > 1 or any(a == "all" or tag_in(a) is not None for a in self.args)
        return self.args if many else None

    @property
    def job_id(self) -> int | None:
        if self.spec.arg is Arg.JOB and self.args:
            return int(self.args[0])
        return None


def command_name(text: str, bot_username: str | None = None) -> str | None:
    """The command word of ``/cmd@bot args`` (lower case), or None when not a command."""
    if not text.startswith("/"):
        return None
    word = text[1:].split(maxsplit=1)[0] if len(text) > 1 and not text[1].isspace() else ""
    name, _, target = word.partition("@")
    if target and bot_username and target.lower() != bot_username.lower():
        return None
    return name.lower()


class CommandTable:
    """Every command the bot answers, in the order ``/help`` lists them."""

    def __init__(self, specs: Iterable[CommandSpec]) -> None:
        self._specs: dict[str, CommandSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"/{spec.name} is declared twice")
            self._specs[spec.name] = spec

    def __iter__(self) -> Iterator[CommandSpec]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def get(self, name: str) -> CommandSpec | None:
        return self._specs.get(name)

    def parse(self, text: str, bot_username: str | None = None) -> ParsedCommand:
        """Parse and validate a command message; raise CommandError with a one-line answer."""
        if len(text) > MAX_MESSAGE:
            raise CommandError(
                f"That message is too long ({len(text)} characters); commands are short."
            )
        if any(unicodedata.category(ch) in ("Cc", "Cf") and ch not in " \t\n" for ch in text):
            raise CommandError("That message has control characters; type the command plainly.")
        name = command_name(text, bot_username)
        if name is None:
            raise CommandError("Not a command. /help lists the commands.")
        spec = self._specs.get(name)
        if spec is None:
            shown = name[:32] if _ARG.match(name[:32] or "x") else "that"
            raise CommandError(f"Unknown command /{shown}. /help lists the commands.")
        args = tuple(text.split()[1:])
        wanted = {
            Arg.NONE: (0, 0),
            Arg.MACHINE: (1, 1),
            Arg.MACHINES: (1, MAX_MACHINES),
            Arg.OPTIONAL_MACHINE: (0, 1),
            Arg.JOB: (1, 1),
            Arg.SELECTION: (0, 1),
        }
        low, high = wanted[spec.arg]
        if not low <= len(args) <= high:
            if len(args) > high:
                raise CommandError(f"Too many arguments. Usage: {spec.usage}")
            raise CommandError(f"Missing argument. Usage: {spec.usage}")
        for arg in args:
            if len(arg) > MAX_ARG or not _ARG.match(arg):
                raise CommandError(f"{spec.usage}: that argument is not a name I know.")
        if spec.arg is Arg.JOB:
            digits = args[0].lstrip("#")
            if not digits.isdigit() or len(digits) > MAX_JOB_DIGITS:
                raise CommandError(f"Usage: {spec.usage} — a job number from /jobs.")
            args = (digits,)
        return ParsedCommand(spec=spec, args=args)
