"""What the report draws, per machine, from what the bot recorded over the last days.

Uptime is the share of probes that found the machine up (``probe_hours``); unexpected
reboots are the boot-id changes the watcher saw outside reboot tests, outages its
incidents; reboot tests and unlock waits are as recorded when they finished
(docs/report.md). Machines come worst first, so the ones that need a look are on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.config.inventory import Machine
from store.health import REBOOT_EVENT, UNLOCK_EVENT, HealthStore, WeekRecords

DAYS = 7
LIMIT = 30  # machines in one picture: more would not be readable on a phone


@dataclass(frozen=True)
class RebootTest:
    seconds: float
    passed: bool


@dataclass(frozen=True)
class MachineWeek:
    """One machine's week."""

    name: str
    probes: int = 0
    up: int = 0
    reboots: int = 0
    outages: int = 0
    tests: tuple[RebootTest, ...] = ()
    unlock_waits: tuple[float, ...] = ()

    @property
    def share(self) -> float | None:
        """Share of probes that found it up, None when it was never probed."""
        return self.up / self.probes if self.probes else None

    @property
    def failed_tests(self) -> int:
        return sum(1 for t in self.tests if not t.passed)

    @property
    def longest_wait(self) -> float | None:
        return max(self.unlock_waits) if self.unlock_waits else None

    def badness(self) -> tuple[float, int, int, int, str]:
        """Sort key, worst first: least up (never probed counts as worst), then failed
        reboot tests, unexpected reboots, outages; the name breaks ties."""
        share = self.share
        return (
            -1.0 if share is None else share,
            -self.failed_tests,
            -self.reboots,
            -self.outages,
            self.name,
        )


@dataclass(frozen=True)
class Week:
    """Machines worst first, over ``start`` to ``end`` (UTC)."""

    start: datetime
    end: datetime
    machines: tuple[MachineWeek, ...]

    def get(self, name: str) -> MachineWeek | None:
        return next((m for m in self.machines if m.name == name), None)


def summarise(records: WeekRecords, names: Sequence[str], start: datetime, end: datetime) -> Week:
    """The week of the machines ``names`` from what the store returned."""
    wanted = set(names)
    reboots: dict[str, int] = {}
    waits: dict[str, list[float]] = {}
    for event in records.events:
        if event.machine not in wanted:
            continue
        if event.kind == REBOOT_EVENT:
            reboots[event.machine] = reboots.get(event.machine, 0) + 1
        elif event.kind == UNLOCK_EVENT and event.seconds is not None:
            waits.setdefault(event.machine, []).append(float(event.seconds))
    outages: dict[str, int] = {}
    for incident in records.incidents:
        outages[incident.machine] = outages.get(incident.machine, 0) + 1
    tests: dict[str, list[RebootTest]] = {}
    for test in records.reboot_tests:
        tests.setdefault(test.machine, []).append(
            RebootTest(round(sum(test.stages.values()), 3), test.ok)
        )
    machines = [
        MachineWeek(
            name=name,
            probes=records.probes.get(name, (0, 0))[0],
            up=records.probes.get(name, (0, 0))[1],
            reboots=reboots.get(name, 0),
            outages=outages.get(name, 0),
            tests=tuple(tests.get(name, ())),
            unlock_waits=tuple(waits.get(name, ())),
        )
        for name in dict.fromkeys(names)
    ]
    return Week(start, end, tuple(sorted(machines, key=MachineWeek.badness)))


async def read_week(
    health: HealthStore,
    machines: Sequence[Machine],
    *,
    now: datetime | None = None,
    days: int = DAYS,
) -> Week:
    """The last ``days`` of ``machines``, read from the store."""
    end = now or datetime.now(UTC)
    start = end - timedelta(days=days)
    found = await health.week(start)
    return summarise(found, [m.name for m in machines], start, end)
