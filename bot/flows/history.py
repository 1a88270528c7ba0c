"""/history: a machine's system generations, read from its profile over a pinned login.

``nix-env -p /nix/var/nix/profiles/system --list-generations`` gives the numbers and dates
(lines like ``   1   2024-01-01 12:00:00   (current)``); ``readlink`` of each
``system-N-link`` and of its ``kernel`` gives the system and the kernel. All of it goes
through one shell kept on one login (``RemoteShell``), in batches, each answer bounded
and made printable: the machine's output is not trusted to be short or clean.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from bot.core.text import printable
from bot.flows.update.guard import PROFILE, generation_link, list_generations
from bot.remote.shell import RemoteShell
from bot.remote.ssh import SshError
from bot.remote.target import Target

#: The newest generations read; a profile keeping more says how many it left out.
MAX_GENERATIONS = 500
BATCH = 50  # generations per script (two readlinks each)
LIST_MAX = 192 * 1024  # under the kept shell's whole answer (SESSION_MAX)
PATH_CHARS = 200
_LINE = re.compile(r"^\s*(\d{1,9})\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s*(\(current\))?\s*$")
_STORE = "/nix/store/"


class HistoryError(Exception):
    """The profile could not be read; the message says why."""


@dataclass(frozen=True)
class Generation:
    number: int
    date: str
    current: bool
    system: str = ""
    kernel: str = ""

    def describe(self) -> str:
        mark = " (current)" if self.current else ""
        kernel = kernel_name(self.kernel) or "no kernel link"
        system = self.system or "no system link"
        return f"• {self.number}{mark} · {self.date}\n  {system}\n  kernel {kernel}"


@dataclass(frozen=True)
class History:
    machine: str
    generations: tuple[Generation, ...]  # newest first
    left_out: int = 0


def parse_list(text: str) -> list[Generation]:
    """The generations ``nix-env --list-generations`` printed, oldest first; other lines
    (warnings) are ignored."""
    found = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            found.append(Generation(int(match[1]), match[2], bool(match[3])))
    return found


def kernel_name(link: str) -> str:
    """``linux-6.12.33`` of ``/nix/store/<hash>-linux-6.12.33/bzImage``."""
    if not link.startswith(_STORE):
        return link
    entry = link.removeprefix(_STORE).split("/", 1)[0]
    return entry.split("-", 1)[1] if "-" in entry else entry


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return printable(lines[0], PATH_CHARS) if lines else ""


async def read_history(target: Target, *, timeout: float, limit: int = MAX_GENERATIONS) -> History:
    """The machine's generations, newest first (HistoryError when they cannot be read)."""
    try:
        conn = await target.system()
    except SshError as exc:
        raise HistoryError(f"cannot log in to {target.name}: {exc}") from None
    try:
        shell = await RemoteShell.open(conn)
        try:
            return await _read(shell, target.name, timeout=timeout, limit=limit)
        finally:
            shell.close()
    except SshError as exc:
        raise HistoryError(f"reading {target.name}'s profile failed: {exc}") from None
    finally:
        conn.close()


async def _read(shell: RemoteShell, machine: str, *, timeout: float, limit: int) -> History:
    # A long profile is long: its list may say more than one ordinary answer.
    (listed,) = await shell.run([list_generations()], timeout=timeout, section_max=LIST_MAX)
    if listed.exit_status != 0:
        why = printable(listed.stderr_text or listed.stdout_text, 200)
        raise HistoryError(f"{machine}: nix-env -p {PROFILE} --list-generations failed: {why}")
    generations = parse_list(listed.stdout_text)
    newest = generations[::-1][:limit]
    read: list[Generation] = []
    for start in range(0, len(newest), BATCH):
        batch = newest[start : start + BATCH]
        commands: list[list[str]] = []
        for g in batch:
            link = generation_link(g.number)
            commands += [["readlink", link], ["readlink", posixpath.join(link, "kernel")]]
        results = await shell.run(commands, timeout=timeout)
        for i, g in enumerate(batch):
            system, kernel = results[2 * i], results[2 * i + 1]
            read.append(
                Generation(
                    g.number,
                    g.date,
                    g.current,
                    _first_line(system.stdout_text),
                    _first_line(kernel.stdout_text),
                )
            )
    return History(machine, tuple(read), left_out=len(generations) - len(newest))
