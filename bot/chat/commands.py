"""The chat commands, their arguments and who may run them — one table, read by the gate,
by ``/help`` and by the handlers, so the three never disagree.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum

MAX_MESSAGE = 1000
MAX_ARG = 64
_ARG = re.compile(r"^#?[A-Za-z0-9_.:@-]+$")


class Arg(Enum):
    """What a command takes after its name."""

    NONE = "none"
    MACHINE = "machine"
    OPTIONAL_MACHINE = "optional machine"
    JOB = "job"


class Right(Enum):
    """Who may run a command: any known user, the machine's operators, or admins only."""

    USER = "user"
    MACHINE = "machine"
    ADMIN = "admin"


@dataclass(frozen=True)
class CommandSpec:
    name: str
    arg: Arg
    right: Right
    summary: str

    @property
    def usage(self) -> str:
        suffix = {
            Arg.NONE: "",
            Arg.MACHINE: " <machine>",
            Arg.OPTIONAL_MACHINE: " [machine]",
            Arg.JOB: " <job>",
        }[self.arg]
        return f"/{self.name}{suffix}"


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("start", Arg.NONE, Right.USER, "what this bot does"),
        CommandSpec("help", Arg.NONE, Right.USER, "the commands you may run"),
        CommandSpec("whoami", Arg.NONE, Right.USER, "your Telegram user id and rights"),
        CommandSpec("machines", Arg.NONE, Right.USER, "the machines you may act on"),
        CommandSpec(
            "status", Arg.OPTIONAL_MACHINE, Right.MACHINE, "last known state and a quick probe"
        ),
        CommandSpec("deploy", Arg.MACHINE, Right.MACHINE, "install a machine (erases its disk)"),
        CommandSpec("reinstall", Arg.MACHINE, Right.MACHINE, "reinstall an installed machine"),
        CommandSpec("unlock", Arg.MACHINE, Right.MACHINE, "unlock a machine waiting in its initrd"),
        CommandSpec("reboot", Arg.MACHINE, Right.MACHINE, "reboot test: down, unlock, healthy"),
        CommandSpec("check", Arg.MACHINE, Right.MACHINE, "run the health checks now"),
        CommandSpec("jobs", Arg.NONE, Right.USER, "recent jobs"),
        CommandSpec("log", Arg.JOB, Right.MACHINE, "a job's log"),
        CommandSpec("cancel", Arg.JOB, Right.MACHINE, "stop a running job"),
        CommandSpec("schedule", Arg.NONE, Right.USER, "scheduled probes and reboot tests"),
        CommandSpec("audit", Arg.NONE, Right.ADMIN, "the last 20 audit entries"),
    )
}


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
        return None

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


def parse_command(text: str, bot_username: str | None = None) -> ParsedCommand:
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
    spec = COMMANDS.get(name)
    if spec is None:
        shown = name[:32] if _ARG.match(name[:32] or "x") else "that"
        raise CommandError(f"Unknown command /{shown}. /help lists the commands.")
    args = tuple(text.split()[1:])
    wanted = {Arg.NONE: (0, 0), Arg.MACHINE: (1, 1), Arg.OPTIONAL_MACHINE: (0, 1), Arg.JOB: (1, 1)}
    low, high = wanted[spec.arg]
    if not low <= len(args) <= high:
        if len(args) > high:
            raise CommandError(f"Too many arguments. Usage: {spec.usage}")
        raise CommandError(f"Missing argument. Usage: {spec.usage}")
    for arg in args:
        if len(arg) > MAX_ARG or not _ARG.match(arg):
            raise CommandError(f"{spec.usage}: that argument is not a name I know.")
    if spec.arg is Arg.JOB and not args[0].lstrip("#").isdigit():
        raise CommandError(f"Usage: {spec.usage} — a job number from /jobs.")
    if spec.arg is Arg.JOB:
        args = (args[0].lstrip("#"),)
    return ParsedCommand(spec=spec, args=args)
