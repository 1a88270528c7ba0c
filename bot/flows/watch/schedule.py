"""Probes and reboot tests registered with PTB's JobQueue, from the inventory, at start.

Ids are stable (``probe:<machine>``, ``reboot-test:<machine>``) and registered with
``replace_existing``: registering again (a restart, a second start) replaces rather than
doubles, and since nothing is pickled a restart loses nothing the inventory still says.
The queue is taken as a small protocol so the engine needs no telegram import.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from apscheduler.triggers.cron import CronTrigger

from bot.chat.access import Access
from bot.config.inventory import Inventory, Machine
from bot.core.durations import format_duration
from bot.flows.watch.outbox import Outbox
from bot.flows.watch.reboot_test import RebootTester
from bot.flows.watch.watcher import Watcher
from bot.remote.fleet import Fleet
from store import JobConflict

log = logging.getLogger(__name__)
PROBE, REBOOT_TEST = "probe", "reboot test"
REBOOT_TEST_GRACE = 600  # a reboot test that could not start on the minute may start late


class JobQueueLike(Protocol):
    """The part of ``telegram.ext.JobQueue`` the schedules use."""

    @property
    def scheduler(self) -> Any: ...

    def run_repeating(
        self,
        callback: Any,
        interval: float,
        *,
        name: str | None = None,
        job_kwargs: dict[str, Any] | None = None,
    ) -> Any: ...

    def run_custom(
        self, callback: Any, job_kwargs: dict[str, Any], *, name: str | None = None
    ) -> Any: ...

    def jobs(self, pattern: Any = None) -> tuple[Any, ...]: ...


@dataclass(frozen=True)
class Entry:
    """One schedule as /schedule shows it."""

    id: str
    kind: str
    machine: str
    every: str
    next_run: datetime | None


def probe_id(machine: str) -> str:
    return f"probe:{machine}"


def reboot_test_id(machine: str) -> str:
    return f"reboot-test:{machine}"


class Schedules:
    """Registers, lists and removes the watcher's jobs in the JobQueue."""

    def __init__(
        self,
        queue: JobQueueLike,
        inventory: Inventory,
        watcher: Watcher,
        tester: RebootTester,
        access: Access,
        outbox: Outbox,
        fleet: Fleet,
        *,
        enabled: bool = True,
    ) -> None:
        self.queue = queue
        self.inventory = inventory
        self.watcher = watcher
        self.tester = tester
        self.access = access
        self.outbox = outbox
        self.fleet = fleet
        self.enabled = enabled
        self._every: dict[str, str] = {}

    def start(self) -> None:
        """Register every machine's probe and, if it has one, its reboot test.

        Nothing is registered when probes are off (the example inventory names hosts that
        are not the user's: never reboot them).
        """
        if not self.enabled:
            return
        for machine in self.inventory:
            self.queue.run_repeating(
                self._probe_callback(machine),
                interval=machine.probe_interval,
                name=probe_id(machine.name),
                job_kwargs={"id": probe_id(machine.name), "replace_existing": True},
            )
            self._every[probe_id(machine.name)] = f"every {format_duration(machine.probe_interval)}"
            if machine.reboot_check:
                trigger = CronTrigger.from_crontab(
                    machine.reboot_check, timezone=self.queue.scheduler.timezone
                )
                self.queue.run_custom(
                    self._reboot_callback(machine),
                    name=reboot_test_id(machine.name),
                    job_kwargs={
                        "trigger": trigger,
                        "id": reboot_test_id(machine.name),
                        "replace_existing": True,
                        "misfire_grace_time": REBOOT_TEST_GRACE,
                        "coalesce": True,
                    },
                )
                self._every[reboot_test_id(machine.name)] = f"cron {machine.reboot_check}"

    def entries(self) -> list[Entry]:
        found: list[Entry] = []
        for job in self.queue.jobs():
            name = job.name or ""
            if name not in self._every:
                continue
            kind, _, machine = name.partition(":")
            found.append(
                Entry(
                    id=name,
                    kind=PROBE if kind == "probe" else REBOOT_TEST,
                    machine=machine,
                    every=self._every[name],
                    next_run=job.next_t,
                )
            )
        return sorted(found, key=lambda e: (e.machine, e.kind))

    def _probe_callback(self, machine: Machine) -> Callable[[object], Awaitable[None]]:
        async def probe(context: object) -> None:
            await self.watcher.probe_machine(machine)

        return probe

    def _reboot_callback(self, machine: Machine) -> Callable[[object], Awaitable[None]]:
        async def reboot_test(context: object) -> None:
            people = self.access.people_for(machine)
            if not (await self.fleet.pins(machine)).system:
                # Nothing to reboot yet: a machine with no pinned system key cannot be
                # followed through a reboot, and that is not a stall.
                self.outbox.add(
                    people,
                    f"⏭ Scheduled reboot test of {machine.name} skipped: not installed yet.",
                )
                return
            try:
                await self.tester.start(machine, trigger="scheduled", user_id=None, chat_id=None)
            except JobConflict as exc:
                self.outbox.add(
                    people,
                    f"⏭ Scheduled reboot test of {machine.name} skipped: job {exc.job.id} "
                    f"({exc.job.kind}) is running.",
                )

        return reboot_test
