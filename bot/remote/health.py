"""Health of a booted machine, read over a pinned SSH login.

Everything is read from the machine itself: systemd's verdict and failed units, disk
usage, uptime, the boot id, and the inventory's ``checks`` (``tcp:PORT`` with ``nc -z`` and
URLs with ``curl``, both run on the machine against 127.0.0.1), so no service needs to be
exposed for the bot to watch it.

Every command of a health check goes in one script (``bot.remote.shell``): one exec, or
one line to the shell kept on a kept login.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass

import asyncssh

from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.core.text import one_line, printable
from bot.remote.place import Place
from bot.remote.shell import SECTION_MAX, RemoteShell, run_script
from bot.remote.ssh import CommandResult, run

BOOT_ID = ["cat", "/proc/sys/kernel/random/boot_id"]
_BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CHANNELS = 4


@dataclass(frozen=True)
class CheckLimits:
    """How a health check is judged, apart from how the machine is reached: each check's
    patience, and the disk use (per cent) that counts as full."""

    check_timeout: float = 5.0
    disk_limit: int = 90


DEFAULT_LIMITS = CheckLimits()


@dataclass(frozen=True)
class CheckResult:
    """One inventory check (``tcp:443``, ``http://127.0.0.1:8080/health``)."""

    check: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.check}: {self.detail}"


#: ``systemctl is-system-running`` while the boot is not over.
BOOTING = frozenset({"initializing", "starting"})


@dataclass(frozen=True)
class Health:
    """What a booted machine says about itself."""

    boot_id: str
    system: str
    failed_units: tuple[str, ...] = ()
    disks: tuple[tuple[str, int], ...] = ()  # (mount point, use %)
    uptime: float | None = None
    checks: tuple[CheckResult, ...] = ()
    disk_limit: int = 90

    @property
    def booting(self) -> bool:
        """systemd is still bringing the system up: SSH answers before every unit started,
        so a verdict now would judge a boot that is not over (``is-system-running``)."""
        return self.system in BOOTING

    def problems(self) -> list[str]:
        return self.problems_since(None)

    def problems_since(self, before: Health | None) -> list[str]:
        """The problems that were not there ``before`` (a reading ahead of a change; None:
        every problem): a unit failing all along does not make an update of the machine fail."""
        was = before or Health(boot_id="", system="")  # no reading: nothing was there
        units = [u for u in self.failed_units if u not in was.failed_units]
        found: list[str] = []
        if self.system != "running" and (self.system != was.system or units):
            failed = f": failed {', '.join(units[:8])}" if units else ""
            found.append(f"system {self.system}{failed}")
        elif units:
            found.append(f"failed units {', '.join(units[:8])}")
        full = {point for point, used in was.disks if used >= was.disk_limit}
        for point, used in self.disks:
            if used >= self.disk_limit and point not in full:
                found.append(f"{point} {used}% full")
        failing = {c.check for c in was.checks if not c.ok}
        found += [
            f"{c.check} {c.detail}" for c in self.checks if not c.ok and c.check not in failing
        ]
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()

    def summary(self) -> str:
        """One line: the verdict, then the facts."""
        parts = [f"system {self.system}"]
        if self.failed_units:
            parts.append(f"failed: {', '.join(self.failed_units[:8])}")
        parts += [f"{point} {used}%" for point, used in self.disks]
        if self.uptime is not None:
            parts.append(f"up {format_duration(self.uptime)}")
        if self.checks:
            good = sum(1 for c in self.checks if c.ok)
            parts.append(f"checks {good}/{len(self.checks)} ok")
        return ", ".join(parts)

    def report(self) -> str:
        """Several lines for /check."""
        lines = [("✅ healthy: " if self.ok else "⚠️ unhealthy: ") + self.summary()]
        lines += [f"  {c.line()}" for c in self.checks]
        return "\n".join(lines)


@dataclass(frozen=True)
class Probe:
    """One probe: the state, a short reason, and the health when the system is up."""

    state: Place
    detail: str = ""
    health: Health | None = None

    @property
    def ok(self) -> bool:
        return self.state is Place.SYSTEM and self.health is not None and self.health.ok

    @property
    def problem(self) -> str:
        if self.state is Place.SYSTEM and self.health is not None:
            return "; ".join(self.health.problems())
        return f"{self.state.value}" + (f" ({self.detail})" if self.detail else "")


FAILED_UNITS = ["systemctl", "--failed", "--no-legend", "--plain"]


MAX_FAILED_UNITS = 50


def failed_units(text: str) -> tuple[str, ...]:
    """The unit names of ``systemctl --failed --no-legend --plain`` (printable, bounded)."""
    names = (printable(line.split()[0], 120) for line in text.splitlines() if line.strip())
    return tuple(itertools.islice((n for n in names if n), MAX_FAILED_UNITS))


def health_commands(machine: Machine, check_timeout: float) -> list[list[str]]:
    """The commands of one health check, in the order :func:`_health` reads them."""
    mounts = ["/"] + ([machine.persist_dir] if machine.persist_dir not in ("", "/") else [])
    return [
        BOOT_ID,
        ["systemctl", "is-system-running"],
        FAILED_UNITS,
        ["df", "-P", *mounts],
        ["cat", "/proc/uptime"],
        *(check_argv(c, check_timeout) for c in machine.checks),
    ]


async def read_health(
    conn: asyncssh.SSHClientConnection,
    machine: Machine,
    *,
    ssh_timeout: float,
    limits: CheckLimits = DEFAULT_LIMITS,
) -> Health:
    """Every health command in one exec (a shell script), else one channel each."""
    commands = health_commands(machine, limits.check_timeout)
    timeout = ssh_timeout + limits.check_timeout * (1 + len(machine.checks))
    results = await run_script(conn, commands, timeout=timeout)
    if results is None:
        results = await _one_by_one(conn, commands, timeout=limits.check_timeout + ssh_timeout)
    return _health(machine, results, limits.disk_limit)


async def read_health_in(
    shell: RemoteShell,
    machine: Machine,
    *,
    ssh_timeout: float,
    limits: CheckLimits = DEFAULT_LIMITS,
) -> Health:
    """The health check through a kept shell (ShellFailed, and the shell closed, when it
    went wrong)."""
    commands = health_commands(machine, limits.check_timeout)
    timeout = ssh_timeout + limits.check_timeout * (1 + len(machine.checks))
    results = await shell.run(commands, timeout=timeout)
    return _health(machine, results, limits.disk_limit)


async def _one_by_one(
    conn: asyncssh.SSHClientConnection, commands: list[list[str]], *, timeout: float
) -> list[CommandResult]:
    """Each command on its own channel, a few at a time (no ``sh`` on the machine)."""
    channels = asyncio.Semaphore(_CHANNELS)

    async def one(argv: list[str]) -> CommandResult:
        async with channels:
            result = await run(conn, argv, timeout=timeout)
        return CommandResult(
            result.exit_status, result.stdout[:SECTION_MAX], result.stderr[:SECTION_MAX]
        )

    return list(await asyncio.gather(*(one(argv) for argv in commands)))


def boot_id_in(result: CommandResult) -> str:
    """The boot id :data:`BOOT_ID` printed; "" when it failed or printed no boot id."""
    value = result.stdout[:256].decode("ascii", "replace").strip() if result.ok else ""
    return value if _BOOT_ID.fullmatch(value) else ""


def _health(machine: Machine, results: list[CommandResult], disk_limit: int) -> Health:
    boot, state, failed, df, uptime, *checks = results
    return Health(
        boot_id=boot_id_in(boot),
        system=printable(state.stdout_text.strip(), 64) or "unknown",
        failed_units=failed_units(failed.stdout_text),
        disks=_disks(df.stdout_text),
        uptime=_uptime(uptime.stdout_text),
        checks=tuple(_judge(c, r) for c, r in zip(machine.checks, checks, strict=True)),
        disk_limit=disk_limit,
    )


def check_argv(check: str, timeout: float) -> list[str]:
    """The command that runs one inventory check on the machine."""
    seconds = str(max(1, round(timeout)))
    if check.startswith("tcp:"):
        return ["nc", "-z", "-w", seconds, "127.0.0.1", check[4:]]
    return [
        "curl",
        "--globoff",  # [1-9999] and {a,b} in a URL are not a request storm
        "--silent",
        "--show-error",
        "--output",
        "/dev/null",
        "--max-time",
        seconds,
        "--write-out",
        "%{http_code}",
        check,
    ]


def _judge(check: str, result: CommandResult) -> CheckResult:
    err = one_line(result.stderr_text)
    if result.exit_status == 127:
        tool = "nc" if check.startswith("tcp:") else "curl"
        return CheckResult(check, False, f"cannot check: {tool} is missing on the machine")
    if check.startswith("tcp:"):
        if result.ok:
            return CheckResult(check, True, "open")
        return CheckResult(check, False, "closed" + (f" ({err})" if err else ""))
    code = result.stdout_text.strip()[-3:]
    if code.isdigit() and 200 <= int(code) < 400:
        return CheckResult(check, True, f"HTTP {code}")
    if code.isdigit() and code != "000":
        return CheckResult(check, False, f"HTTP {code}")
    return CheckResult(check, False, f"no answer ({err or f'curl exit {result.exit_status}'})")


def _disks(text: str) -> tuple[tuple[str, int], ...]:
    found: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[4].rstrip("%").isdigit():
            found[printable(fields[5], 120)] = int(fields[4].rstrip("%"))
    return tuple(found.items())


def _uptime(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None
