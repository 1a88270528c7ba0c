"""Probes and reboot tests registered with PTB's JobQueue, from the inventory, at start.

Ids are stable (``probe:<machine>``, ``reboot-test:<machine>``) and registered with
``replace_existing``: registering again (a restart, a second start, a reload) replaces
rather than doubles, and since nothing is pickled a restart loses nothing the inventory
still says. A reload calls :meth:`Schedules.sync` again, which also removes the jobs of
machines that left; a callback looks its machine up when it fires, so it always acts on
the inventory in force. The queue is taken as a small protocol so the engine needs no
telegram import.

Probes with the same interval do not fire together: each machine's first probe comes one
interval plus a stable offset after the start (:func:`probe_offset`, from a hash of its
name), so 1000 machines probed every minute are probed about 17 a second, not 1000 at
once, and a restart keeps them spread the same way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.core.cron import cron_trigger
from bot.core.durations import format_duration
from bot.flows.basics import Basics
from bot.flows.watch.outbox import Outbox
from bot.flows.watch.reboot_test import RebootTester
from bot.flows.watch.watcher import Watcher
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
        first: float | None = None,
        name: str | None = None,
        job_kwargs: dict[str, Any] | None = None,
    ) -> Any: ...

    def run_custom(
        self,
        callback: Any,
        job_kwargs: dict[str, Any],
        *,
        name: str | None = None,
        data: object = None,
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


def probe_offset(machine: str, interval: float) -> float:
    """A stable point in ``[0, interval)`` for the machine's probes, spread by its name."""
    digest = hashlib.sha256(machine.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval


def probe_id(machine: str) -> str:
    return f"probe:{machine}"


def reboot_test_id(machine: str) -> str:
    return f"reboot-test:{machine}"


class Schedules:
    """Registers, lists and removes the watcher's jobs in the JobQueue."""

    def __init__(
        self,
        queue: JobQueueLike,
        basics: Basics,
        *,
        watcher: Watcher,
        tester: RebootTester,
        outbox: Outbox,
    ) -> None:
        self.queue = queue
        self.current, self.access, self.fleet = basics.current, basics.access, basics.fleet
        self.watcher = watcher
        self.tester = tester
        self.outbox = outbox
        self.enabled = basics.probes_enabled
        self._every: dict[str, str] = {}  # what /schedule shows, by job id
        self._exact: dict[str, object] = {}  # the interval or cron registered, by job id

    def start(self) -> None:
        """Register every machine's probe and, if it has one, its reboot test.

        Nothing is registered when probes are off (the example inventory names hosts that
        are not the user's: never reboot them).
        """
        self.sync()

    def sync(self) -> None:
        """Make the queue match the inventory in force: register, replace, remove.

        Only a schedule that is new or changed is registered again, so a reload leaves the
        timing of the others alone; a job that is running goes on either way (APScheduler
        replaces the schedule, not the run). Callbacks look their machine up when they fire.
        """
        if not self.enabled:
            return
        every: dict[str, str] = {}
        exact: dict[str, object] = {}
        for machine in self.current.inventory:
            name = machine.name
            every[probe_id(name)] = f"every {format_duration(machine.probe_interval)}"
            exact[probe_id(name)] = machine.probe_interval
            if self._exact.get(probe_id(name)) != machine.probe_interval:
                self.queue.run_repeating(
                    self._probe_callback(name),
                    interval=machine.probe_interval,
                    first=machine.probe_interval + probe_offset(name, machine.probe_interval),
                    name=probe_id(name),
                    job_kwargs={"id": probe_id(name), "replace_existing": True},
                )
            if not machine.reboot_check:
                continue
            every[reboot_test_id(name)] = f"cron {machine.reboot_check}"
            exact[reboot_test_id(name)] = machine.reboot_check
            if self._exact.get(reboot_test_id(name)) != machine.reboot_check:
                trigger = cron_trigger(machine.reboot_check, self.queue.scheduler.timezone)
                self.queue.run_custom(
                    self._reboot_callback(name),
                    name=reboot_test_id(name),
                    job_kwargs={
                        "trigger": trigger,
                        "id": reboot_test_id(name),
                        "replace_existing": True,
                        "misfire_grace_time": REBOOT_TEST_GRACE,
                        "coalesce": True,
                    },
                )
        for job in self.queue.jobs():
            if job.name in self._every and job.name not in every:
                job.schedule_removal()
        self._every, self._exact = every, exact

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

    def _probe_callback(self, name: str) -> Callable[[object], Awaitable[None]]:
        async def probe(context: object) -> None:
            machine = self.current.inventory.get(name)
            if machine is not None:
                await self.watcher.probe_machine(machine)

        return probe

    def _reboot_callback(self, name: str) -> Callable[[object], Awaitable[None]]:
        async def reboot_test(context: object) -> None:
            machine = self.current.inventory.get(name)
            if machine is None:
                return
            people = self.access.people_for(machine)
            pins = await self.fleet.pins(machine)
            if not pins.system or (machine.luks and not pins.initrd):
                # Nothing to reboot yet: a machine with no pinned system key (or, LUKS, no
                # initrd key to unlock it through) cannot be followed through a reboot, and
                # that is not a stall.
                why = "not installed yet."
                if pins.conflicts:
                    why = "its keys contradict each other."
                elif pins.system:
                    why += " No initrd key is known: it is read from the booted system."
                self.outbox.add(people, f"⏭ Scheduled reboot test of {machine.name} skipped: {why}")
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
