"""What an update changes in the machine's store, the way ``nix store diff-closures`` says it.

Both closures are read as ``nix path-info --recursive --size`` prints them (a store path,
spaces, a tab, its NAR size): the new system's on the bot's machine through the nix
runner, the running one over the pinned login (``docs/updates.md``). Every line must be a
store path of Nix's grammar and a size: one that is not refuses the whole answer, nothing
of it is shown. The grouping and the printed lines follow Nix's ``diff-closures``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.chat.port import ChatPort
from bot.core.text import printable
from bot.remote import nix
from bot.remote.shell import RemoteShell
from bot.remote.ssh import SshError

#: The most store paths one closure may have (a desktop NixOS has about 3000).
MAX_PATHS = 20000
#: What the running system's answer may be (the kept shell's own bound is above it).
MAX_ANSWER = 240 * 1024
#: Nix shows no size change below 8 KiB.
SIZE_THRESHOLD = 8 * 1024
# The nix runner hands lines on with tabs made spaces: either separates the two columns.
_LINE = re.compile(rf"({nix.STORE_PATH.pattern})[ \t]+([0-9]{{1,15}})")
# Nix strips an output name (``-bin``, ``-dev``, ``-lib32``) before splitting the version.
_OUTPUT = re.compile(r"(.*)-([a-z]+|lib32|lib64)")
REMOTE_COMMAND = (
    "nix",
    *nix.GLOBAL_FLAGS,
    "path-info",
    "--recursive",
    "--size",
    "/run/current-system",
)

Closure = Mapping[str, int]  # store path → NAR size


class ClosureError(Exception):
    """A closure could not be read or its listing was refused; the message says why."""


@dataclass(frozen=True)
class Change:
    """One line of the difference: a package's versions before and after, its size delta."""

    name: str
    removed: tuple[str, ...]
    added: tuple[str, ...]
    delta: int

    def line(self) -> str:
        items = []
        if self.removed or self.added:
            items.append(f"{_versions(self.removed)} → {_versions(self.added)}")
        if abs(self.delta) >= SIZE_THRESHOLD:
            items.append(f"{self.delta / 1024:+.1f} KiB")
        return f"{self.name}: {', '.join(items)}"


def parse_listing(text: str, *, max_paths: int = MAX_PATHS) -> dict[str, int]:
    """The store paths and sizes of a ``path-info -rs`` listing; ClosureError for any line
    that is not one (the line is shown cleaned, cut short)."""
    found: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        if match is None or match.group(1).endswith(".drv"):
            raise ClosureError(
                f"line {number} is not a store path and size: {printable(line, 80)!r}"
            )
        if len(found) >= max_paths:
            raise ClosureError(f"more than {max_paths} store paths")
        found[match.group(1)] = int(match.group(2))
    if not found:
        raise ClosureError("no store paths")
    return found


def package_of(path: str) -> tuple[str, str]:
    """(name, version) of a store path as Nix groups it: the output name stripped, then
    the name split at the first ``-`` not followed by a letter."""
    name = path.rsplit("/", 1)[1].split("-", 1)[1]
    output = _OUTPUT.fullmatch(name)
    if output is not None:
        name = output.group(1)
    for i, char in enumerate(name[:-1]):
        if char == "-" and not ("a" <= name[i + 1].lower() <= "z"):
            return name[:i], name[i + 1 :]
    return name, ""


def diff(before: Closure, after: Closure) -> list[Change]:
    """Nix's closure difference, sorted by name: a package whose versions changed, or whose
    size changed by 8 KiB or more."""
    grouped_before, grouped_after = _group(before), _group(after)
    changes = []
    for name in sorted(grouped_before.keys() | grouped_after.keys()):
        old, new = grouped_before.get(name, {}), grouped_after.get(name, {})
        delta = sum(new.values()) - sum(old.values())
        removed = tuple(sorted(v for v in old if v not in new))
        added = tuple(sorted(v for v in new if v not in old))
        if removed or added or abs(delta) >= SIZE_THRESHOLD:
            changes.append(Change(name, removed, added, delta))
    return changes


def summary(changes: Sequence[Change], room: int) -> tuple[str, bool]:
    """The text for the confirmation within ``room`` characters, and whether the whole list
    had to go to a file instead."""
    if not changes:
        return "Closure: no package changes.", False
    head = f"Closure: {len(changes)} package change{'s' if len(changes) != 1 else ''}"
    whole = head + ":\n" + "\n".join(c.line() for c in changes)
    if len(whole) <= room:
        return whole, False
    short = f"{counted(changes)}: the whole list is in the file above."
    return short[:room], True


def counted(changes: Sequence[Change]) -> str:
    """The difference in one line: how many packages and versions changed, the size."""
    if not changes:
        return "Closure: no package changes"
    total = sum(c.delta for c in changes)
    versions = sum(1 for c in changes if c.removed or c.added)
    return (
        f"Closure: {len(changes)} package change{'s' if len(changes) != 1 else ''} "
        f"({versions} version change{'s' if versions != 1 else ''}, "
        f"{total / 1024:+.1f} KiB in all)"
    )


def full_text(changes: Sequence[Change]) -> str:
    return "".join(c.line() + "\n" for c in changes)


async def running_closure(shell: RemoteShell, *, timeout: float) -> dict[str, int]:
    """The running system's closure, asked over the kept pinned login."""
    (result,) = await shell.run(
        [shlex.join(REMOTE_COMMAND) + " </dev/null"], timeout=timeout, section_max=MAX_ANSWER
    )
    if result.exit_status != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        last = printable(said[-1], 200) if said else f"exit {result.exit_status}"
        raise ClosureError(f"the machine cannot list its closure: {last}")
    if len(result.stdout) >= MAX_ANSWER:
        raise ClosureError(f"the machine's closure listing exceeds {MAX_ANSWER} bytes")
    return parse_listing(result.stdout.decode(errors="replace"))


async def local_closure(
    command: Sequence[str], path: str, *, timeout: float, kill_grace: float
) -> dict[str, int]:
    """The new system's closure, from the bot's own store through the nix runner."""
    lines: list[str] = []

    def keep(line: str) -> None:
        if len(lines) > MAX_PATHS:
            return
        lines.append(line)

    argv = [*command, *nix.GLOBAL_FLAGS, "path-info", "--recursive", "--size", path]
    try:
        done = await nix.run_nix(
            argv,
            what="nix path-info",
            env=nix.child_env(),
            on_line=keep,
            timeout=timeout,
            kill_grace=kill_grace,
        )
    except nix.NixError as exc:
        raise ClosureError(str(exc)) from None
    if done.code != 0:
        raise ClosureError(f"nix path-info failed: {done.last or f'exit {done.code}'}")
    return parse_listing("\n".join(lines))


def _group(closure: Closure) -> dict[str, dict[str, int]]:
    grouped: dict[str, dict[str, int]] = {}
    for path, size in closure.items():
        name, version = package_of(path)
        versions = grouped.setdefault(name, {})
        versions[version] = versions.get(version, 0) + size
    return grouped


def _versions(versions: Sequence[str]) -> str:
    if not versions:
        return "∅"
    return ", ".join(sorted({v or "ε" for v in versions}))


#: Telegram's limit for one message's text, and what the confirmation keeps for its verdict.
MESSAGE_LIMIT = 4096
VERDICT_ROOM = 200


async def review(
    *,
    shell: RemoteShell,
    nix_command: Sequence[str],
    new: str,
    machine: str,
    job: int,
    chat: ChatPort,
    chat_id: int,
    other_text: str,
    timeout: float,
    build_timeout: float,
    kill_grace: float,
) -> tuple[str, str]:
    """The closure difference for a confirmation whose other text is ``other_text``, and a
    line for the job's log. A list too long for the message is sent whole as a file first;
    a closure that cannot be read is said so, and the confirmation goes on without it."""
    try:
        before = await running_closure(shell, timeout=timeout)
        after = await local_closure(nix_command, new, timeout=build_timeout, kill_grace=kill_grace)
    except (ClosureError, SshError) as exc:
        text = f"Closure: not shown ({exc})."
        return printable(text, 400), text
    changes = diff(before, after)
    room = MESSAGE_LIMIT - len(other_text) - VERDICT_ROOM
    text, needs_file = summary(changes, room)
    if needs_file:
        data = full_text(changes).encode()
        name = f"closure-{machine}-job{job}.txt"
        caption = f"{machine}: what the update changes ({len(changes)} packages)"
        if not await chat.send_file(chat_id, name, data, caption=caption):
            text = text.replace("in the file above", "not sent: the file could not be posted")
    return text, f"closure: {len(changes)} package changes"
