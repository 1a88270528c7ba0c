"""What a rollout changes in each machine's store, in its one confirmation.

Each machine's closure difference is computed as a single update's (``closure.py``): the
running closure asked over a pinned login made for it while the systems build, the new one
read from the bot's own store once the build is done, a few machines at a time. Machines
whose differences are the same are one group, so thirty web servers moving to the same
system read as one line. The groups are summarised within the room the question leaves;
whenever that is not the whole, the whole goes first as a file, machine group by machine
group (docs/updates.md, "Rollouts").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from bot.chat.port import ChatPort
from bot.config.inventory import Machine
from bot.core.telegram_limits import text_length
from bot.core.text import printable
from bot.flows.update import closure
from bot.flows.update.closure import Change, ClosureError
from bot.flows.update.login import fresh_shell
from bot.remote.fleet import Fleet
from bot.remote.ssh import SshError

#: Machines whose closures are read at once (each is a login and a local ``path-info``).
READS_AT_ONCE = 8
NAMES_SHOWN = 12
MORE = "• … and {} more group(s)"


@dataclass(frozen=True)
class Group:
    """Machines with the same difference, or the same reason it could not be read."""

    machines: tuple[str, ...]
    changes: tuple[Change, ...] = ()
    problem: str = ""

    def names(self, shown: int = NAMES_SHOWN) -> str:
        listed = ", ".join(self.machines[:shown])
        more = len(self.machines) - shown
        return f"{listed}{f' and {more} more' if more > 0 else ''} ({len(self.machines)})"

    def short(self, shown: int = NAMES_SHOWN) -> str:
        """The group in one line."""
        if self.problem:
            return f"• {self.names(shown)}: not shown ({self.problem})"
        return f"• {self.names(shown)}: {closure.counted(self.changes).removeprefix('Closure: ')}"

    def whole(self, shown: int = NAMES_SHOWN) -> str:
        """The group with every changed package."""
        if self.problem or not self.changes:
            return self.short(shown)
        return self.short(shown) + ":\n" + "\n".join("  " + c.line() for c in self.changes)


@dataclass(frozen=True)
class Review:
    groups: tuple[Group, ...]

    def summary(self, room: int) -> tuple[str, bool]:
        """The text within ``room`` characters, and whether it is less than the whole."""
        head = f"Closure differences, {len(self.groups)} group(s) of machines:"
        whole = "\n".join([head, *(g.whole() for g in self.groups)])
        if text_length(whole) <= room:
            return whole, False
        tail = "The whole list is in the file above."
        lines = [head]
        budget = room - len(head) - len(tail) - len(MORE.format(len(self.groups))) - 3
        for n, group in enumerate(self.groups):
            line = group.short()
            if len(line) + 1 > budget:
                lines.append(MORE.format(len(self.groups) - n))
                break
            lines.append(line)
            budget -= len(line) + 1
        lines.append(tail)
        text = "\n".join(lines)
        return (text if text_length(text) <= room else tail[: max(room, 0)]), True

    def file_text(self) -> str:
        """Every group with all its machines and every changed package."""
        return "".join(g.whole(shown=len(g.machines)) + "\n\n" for g in self.groups)


#: A machine's running closure, or why it could not be read.
Running = dict[str, int] | str


async def read_running(
    machines: Sequence[Machine], *, fleet: Fleet, timeout: float
) -> dict[str, Running]:
    """Each machine's running closure over a pinned login made for it, a few at a time;
    needs nothing built, so it runs while the build does."""
    gate = asyncio.Semaphore(READS_AT_ONCE)

    async def one(machine: Machine) -> Running:
        async with gate:
            try:
                target = await fleet.target(machine)
                async with fresh_shell(target) as shell:
                    return await closure.running_closure(shell, timeout=timeout)
            except (ClosureError, SshError) as exc:
                return printable(str(exc), 200)

    found = await asyncio.gather(*(one(m) for m in machines))
    return {m.name: f for m, f in zip(machines, found, strict=True)}


async def read_review(
    machines: Sequence[Machine],
    systems: dict[str, str],
    running: dict[str, Running],
    *,
    nix_command: Sequence[str],
    build_timeout: float,
    kill_grace: float,
) -> Review:
    """Every machine's difference from its running closure to ``systems[name]``'s (each
    new system read once from the bot's store), grouped."""
    gate = asyncio.Semaphore(READS_AT_ONCE)

    async def new_closure(path: str) -> dict[str, int] | str:
        async with gate:
            try:
                return await closure.local_closure(
                    nix_command, path, timeout=build_timeout, kill_grace=kill_grace
                )
            except ClosureError as exc:
                return printable(str(exc), 200)

    paths = list(dict.fromkeys(systems[m.name] for m in machines))
    news = dict(zip(paths, await asyncio.gather(*(new_closure(p) for p in paths)), strict=True))
    groups: dict[tuple[tuple[Change, ...], str], list[str]] = {}
    for machine in machines:
        before, after = running[machine.name], news[systems[machine.name]]
        if isinstance(before, str):
            key: tuple[tuple[Change, ...], str] = ((), before)
        elif isinstance(after, str):
            key = ((), after)
        else:
            key = (tuple(closure.diff(before, after)), "")
        groups.setdefault(key, []).append(machine.name)
    return Review(
        tuple(Group(tuple(names), changes, problem) for (changes, problem), names in groups.items())
    )


async def shown(
    review: Review, *, room: int, chat: ChatPort, chat_id: int, job: int
) -> tuple[str, str]:
    """The summary for the question and a line for the job's log; the whole is posted as a
    file first when the summary is less."""
    text, needs_file = review.summary(room)
    if needs_file:
        machines = sum(len(g.machines) for g in review.groups)
        caption = f"What the rollout changes on its {machines} machines"
        name = f"closure-rollout-job{job}.txt"
        if not await chat.send_file(chat_id, name, review.file_text().encode(), caption=caption):
            text = text.replace("is in the file above", "could not be posted as a file")
    changed = sum(len(g.machines) for g in review.groups if g.changes)
    return text, f"closure: {len(review.groups)} groups, {changed} machines with package changes"
