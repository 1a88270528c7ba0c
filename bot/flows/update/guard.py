"""The rollback guard, on the machine: what the bot runs there to activate a system safely.

The guard is a transient systemd timer armed before the activation. Unless the bot stops
it in time, it switches the profile back to the generation that was current before (by
number, not one step back: after a ``/rollback`` one step back is the wrong one) and
activates that. It lives on the machine, so it acts even when the activation cut the bot's
connection or the bot itself died. The activation runs in a transient unit, as
nixos-rebuild runs it, so that it outlives the SSH session that started it
(``docs/updates.md``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from bot.remote.shell import Command, RemoteShell
from bot.remote.ssh import CommandResult

PROFILE = "/nix/var/nix/profiles/system"
PARTS = ("kernel", "initrd", "kernel-modules")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GENERATION = re.compile(r"^\s*(\d+)\s+\S+\s+\S+\s*(\(current\))?\s*$")


def rollback_unit(job_id: int) -> str:
    return f"deploybot-rollback-{job_id}"


def switch_unit(job_id: int) -> str:
    return f"deploybot-switch-{job_id}"


def generation_link(number: int) -> str:
    return f"{PROFILE}-{number}-link"


def parse_generations(text: str) -> tuple[list[int], int | None]:
    """The numbers ``nix-env --list-generations`` lists, and the current one."""
    numbers: list[int] = []
    current: int | None = None
    for line in text.splitlines():
        match = _GENERATION.match(line)
        if match is None:
            continue
        numbers.append(int(match.group(1)))
        if match.group(2):
            current = int(match.group(1))
    return numbers, current


def list_generations() -> list[str]:
    return ["nix-env", "-p", PROFILE, "--list-generations"]


def set_profile(toplevel: str) -> list[str]:
    """A new generation pointing at ``toplevel`` (it activates nothing)."""
    return ["nix-env", "-p", PROFILE, "--set", toplevel]


def switch_generation(number: int) -> list[str]:
    return ["nix-env", "-p", PROFILE, "--switch-generation", str(number)]


def arm(job_id: int, *, back_to: int, seconds: float) -> list[str]:
    """The timer that, ``seconds`` from now, switches back to generation ``back_to``.

    ``AccuracySec=1s``: systemd's default accuracy would let it fire up to a minute late.
    ``RemainAfterElapse=no``: once it fired and its switch back ended, systemd unloads it
    (by default an elapsed timer stays loaded for ever, docs/updates.md).
    """
    back = (
        f"{shlex.join(switch_generation(back_to))} && "
        f"{shlex.join([generation_link(back_to) + '/bin/switch-to-configuration', 'switch'])}"
    )
    return [
        "systemd-run",
        f"--unit={rollback_unit(job_id)}",
        f"--on-active={max(1, round(seconds))}s",
        "--timer-property=AccuracySec=1s",
        "--timer-property=RemainAfterElapse=no",
        "--description=deploybot rollback guard",
        # A transient unit gets the service manager's PATH, not the login's.
        "-E",
        "PATH=/run/current-system/sw/bin:/run/wrappers/bin",
        "sh",
        "-c",
        back,
    ]


def activate(job_id: int, toplevel: str) -> list[str]:
    """``switch-to-configuration switch`` in a transient unit, waited for, its output
    relayed (through a kept shell: give it ``</dev/null``, see :func:`detached`)."""
    return [
        "systemd-run",
        "-E",
        "LOCALE_ARCHIVE",
        "-E",
        "NIXOS_INSTALL_BOOTLOADER",
        "--collect",
        "--no-ask-password",
        "--pipe",
        "--quiet",
        "--wait",
        "--service-type=exec",
        f"--unit={switch_unit(job_id)}",
        f"{toplevel}/bin/switch-to-configuration",
        "switch",
    ]


def detached(command: list[str]) -> str:
    """``command`` with its standard input from /dev/null: in a kept shell the shell's own
    input is the bot's next script, which ``systemd-run --pipe`` would hand the unit."""
    return f"{shlex.join(command)} </dev/null"


def roll_back_now(job_id: int) -> list[str]:
    """Start the guard's service by hand: the switch back runs now, on the machine, as it
    would when the timer fires (systemd-run made ``<unit>.service`` beside the timer)."""
    return ["systemctl", "start", f"{rollback_unit(job_id)}.service"]


def disarm(job_id: int) -> list[str]:
    return ["systemctl", "stop", f"{rollback_unit(job_id)}.timer"]


def running_guards() -> list[str]:
    return ["systemctl", "list-timers", "--all", "--no-legend"]


def armed_guards(listing: str) -> list[str]:
    """Rollback timers still waiting to fire (an elapsed one shows NEXT as ``-``)."""
    return _guards(listing, elapsed=False)


def elapsed_guards(listing: str) -> list[str]:
    """Rollback timers that fired and are still loaded (left by an interrupted job)."""
    return _guards(listing, elapsed=True)


def _guards(listing: str, *, elapsed: bool) -> list[str]:
    found = []
    for line in listing.splitlines():
        if "deploybot-rollback-" not in line or line.lstrip().startswith("-") != elapsed:
            continue
        names = [w for w in line.split() if w.startswith("deploybot-rollback-")]
        found += [n.removesuffix(".timer") for n in names if n.endswith(".timer")]
    return found


def unload(units: Sequence[str]) -> list[str]:
    """Stop (and so unload) these elapsed guard timers."""
    return ["systemctl", "stop", *(f"{unit}.timer" for unit in units)]


@dataclass(frozen=True)
class Links:
    """Where a system's kernel, initrd and modules point (empty when unreadable)."""

    kernel: str = ""
    initrd: str = ""
    modules: str = ""

    def changed(self, other: Links) -> list[str]:
        """The parts that differ from ``other`` (a reboot is needed for any of them)."""
        pairs = zip(PARTS, (self.kernel, self.initrd, self.modules), strict=True)
        theirs = (other.kernel, other.initrd, other.modules)
        return [name for (name, mine), them in zip(pairs, theirs, strict=True) if mine != them]


async def readlink(shell: RemoteShell, path: str, *, timeout: float) -> str:
    """Where ``path`` points on the machine ("" if it is no link); bounded, stripped."""
    (result,) = await shell.run([["readlink", path]], timeout=timeout)
    return first_line(result.stdout_text) if result.ok else ""


@dataclass(frozen=True)
class State:
    """The machine's profile and running system, read in one round trip."""

    numbers: list[int]
    current: int | None
    running: str
    armed: list[str]
    links: list[Links]
    first: str = ""  # the output of the command run before the reading
    elapsed: tuple[str, ...] = ()  # guard timers that fired and are still loaded


async def read_state(
    shell: RemoteShell,
    *,
    timeout: float,
    first: str | None = None,
    systems: Sequence[str] = (),
) -> State:
    """Generations, ``/run/current-system``, armed guards and the kernel links of
    ``systems``; ``first`` (shell text) runs before them, its output kept."""
    reads: list[Command] = [
        list_generations(),
        ["readlink", "/run/current-system"],
        running_guards(),
    ]
    reads += [["readlink", f"{system}/{part}"] for system in systems for part in PARTS]
    results = await shell.run(([first] if first is not None else []) + reads, timeout=timeout)
    head = results.pop(0).stdout_text if first is not None else ""
    generations, running, timers, *found = (r.stdout_text for r in results)
    numbers, current = parse_generations(generations)
    lines = [first_line(o) for o in found]
    links = [Links(*lines[i : i + 3]) for i in range(0, len(lines), 3)]
    return State(
        numbers,
        current,
        first_line(running),
        armed_guards(timers),
        links,
        head,
        tuple(elapsed_guards(timers)),
    )


def first_line(text: str) -> str:
    """The first line a machine printed, bounded and without control characters."""
    lines = text.strip().splitlines()
    return _CONTROL.sub("", lines[0])[:400] if lines else ""


def marked(command: list[str], mark: str) -> str:
    """``command && echo mark``: the mark in the output says it succeeded."""
    return f"{shlex.join(command)} && echo {mark}"


def why(result: CommandResult, limit: int = 200) -> str:
    """A failed remote command's reason, in one bounded line."""
    text = " ".join((result.stderr_text or result.stdout_text).split())
    return f"exit {result.exit_status}: {text[:limit]}" if text else f"exit {result.exit_status}"
