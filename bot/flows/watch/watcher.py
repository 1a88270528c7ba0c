"""Watching the machines: probes, their verdicts, incidents and the alerts they raise.

A machine is alerted about only after ``Tuning.alert_after`` failed probes in a row, once
per incident, and told again when it recovers, with how long it lasted. Alerts wait a
short window in an outbox so that when many machines fail together each person gets one
summary message instead of a storm. Machines with a job in progress (a deploy, a reboot
test) or silenced explicitly are not probed: their flow reports on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable, Iterator
from datetime import datetime
from typing import Any

from bot.chat.access import Access
from bot.config.current import Current
from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.flows.unlock import Unlocker
from bot.flows.watch.outbox import Outbox
from bot.remote.fleet import Fleet
from bot.remote.health import Probe
from bot.remote.place import Place
from store import MachineState, Store, utcnow
from store.health import REBOOT_EVENT, HealthStore, Incident

log = logging.getLogger(__name__)


def since(iso: str) -> float:
    """Seconds from an ISO timestamp of the store until now."""
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return 0.0
    return max(0.0, (datetime.fromisoformat(utcnow()) - then).total_seconds())


class Watcher:
    """Probes machines, bounded in number at a time, and turns results into incidents."""

    def __init__(
        self,
        *,
        current: Current,
        fleet: Fleet,
        store: Store,
        records: HealthStore,
        access: Access,
        outbox: Outbox,
        unlocker: Unlocker,
        concurrency: int,
        alert_after: int,
        enabled: bool = True,
    ) -> None:
        self.current = current
        self.fleet = fleet
        self.store = store
        self.records = records
        self.access = access
        self.outbox = outbox
        self.unlocker = unlocker
        self.alert_after = alert_after
        # The example inventory names hosts that are not the user's: never probe them.
        self.enabled = enabled
        self._slots = asyncio.Semaphore(concurrency)
        self._failures: dict[str, int] = {}
        self._failing_since: dict[str, str] = {}
        self._incidents: dict[str, Incident] | None = None
        self._silenced: dict[str, int] = {}
        self._initrd_told: set[str] = set()
        self._tasks: set[asyncio.Task[object]] = set()

    # -- silencing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def silence(self, name: str) -> Iterator[None]:
        """No probes, counts or alerts for ``name`` while a flow (a reboot test) owns it."""
        self._silenced[name] = self._silenced.get(name, 0) + 1
        try:
            yield
        finally:
            self._silenced[name] -= 1
            if not self._silenced[name]:
                del self._silenced[name]
            self._failures.pop(name, None)
            self._failing_since.pop(name, None)
            self._initrd_told.discard(name)

    def silenced(self, name: str) -> bool:
        return name in self._silenced

    def forget(self, names: Iterable[str]) -> None:
        """Drop the counts of machines a reload removed, so one added back starts afresh."""
        for name in names:
            self._failures.pop(name, None)
            self._failing_since.pop(name, None)
            self._initrd_told.discard(name)

    # -- probing -------------------------------------------------------------------------

    async def probe_round(self, machines: Iterable[Machine] | None = None) -> list[Probe | None]:
        """Probe every machine at once (bounded by ``probe_concurrency``)."""
        chosen = list(self.current.inventory if machines is None else machines)
        return list(await asyncio.gather(*(self.probe_machine(m) for m in chosen)))

    async def probe_machine(self, machine: Machine) -> Probe | None:
        """One scheduled probe; None when the machine is not watched right now."""
        if self.silenced(machine.name) or not self.enabled:
            return None
        try:
            known = await self.store.machine(machine.name)
            target = await self.fleet.target(machine, known)
            # A machine with no key anywhere is not the bot's to judge (/adopt pins it).
            if not target.pins.system and not target.pins.conflicts:
                return None
            if await self.store.active_job(machine.name) is not None:
                return None
            async with self._slots:
                probe = await target.health()
                if probe.state is Place.SYSTEM and machine.luks and not target.pins.initrd:
                    await self.fleet.learn_initrd_key(machine)
            if self.silenced(machine.name):
                return None
            if probe.state is Place.INSTALLER and not target.pins.installed:
                # Not installed yet: where it is is recorded, and nothing is wrong with it.
                await self._record(machine, probe, counted=True)
                return probe
            await self._judge(machine, known, probe)
            return probe
        except Exception:
            log.exception("probe of %s failed", machine.name)
            return None

    async def check_now(self, machine: Machine) -> Probe:
        """The health checks on demand (/check); recorded, but no incident bookkeeping."""
        probe = await (await self.fleet.target(machine)).health()
        await self._record(machine, probe)
        return probe

    # -- verdicts ------------------------------------------------------------------------

    async def _record(self, machine: Machine, probe: Probe, *, counted: bool = False) -> None:
        """The probe's verdict, its check and (``counted``) its uptime sample, written
        together: the store commits writes that arrive together at once."""
        fields = {"state": probe.state.value, "last_probe_at": utcnow(), "detail": probe.detail}
        if probe.health is not None:
            fields["detail"] = probe.health.summary()
            if probe.health.boot_id:
                fields["boot_id"] = probe.health.boot_id
            check = self.records.save_check(
                machine.name, state=probe.state.value, ok=probe.ok, summary=probe.health.summary()
            )
        else:
            check = self.records.save_check(
                machine.name, state=probe.state.value, ok=False, summary=probe.problem
            )
        writes = [check, self.store.update_machine(machine.name, **fields)]
        if counted:
            writes.append(self.records.record_probe(machine.name, up=probe.state is Place.SYSTEM))
        await asyncio.gather(*writes)

    async def _judge(self, machine: Machine, known: MachineState, probe: Probe) -> None:
        name = machine.name
        people = self.access.people_for(machine)
        await self._record(machine, probe, counted=True)
        incidents = await self._open_incidents()
        rebooted = ""
        if probe.health is not None:
            new = probe.health.boot_id
            if known.boot_id and new and new != known.boot_id:
                rebooted = f"boot id {known.boot_id[:8]} → {new[:8]}"
                await self.records.record_event(name, REBOOT_EVENT, detail=rebooted)
            told = name in self._initrd_told
            self._initrd_told.discard(name)
            if rebooted and not told and name not in incidents:
                uptime = probe.health.uptime
                up = f", up {format_duration(uptime)}" if uptime is not None else ""
                self.outbox.add(people, f"⚠️ {name} rebooted unexpectedly ({rebooted}{up}).")
        if probe.state is Place.INITRD and name not in self._initrd_told:
            self._initrd_told.add(name)
            self.outbox.add(
                people, f"⚠️ {name} rebooted unexpectedly and waits in its initrd: unlocking it."
            )
            if not self.unlocker.active(name):
                self._spawn(
                    self.unlocker.unlock(machine, trigger="the watcher found it in its initrd")
                )
        if probe.ok:
            self._failures.pop(name, None)
            self._failing_since.pop(name, None)
            incident = incidents.pop(name, None)
            if incident is not None:
                await self.records.close_incident(incident.id)
                lasted = format_duration(since(incident.started_at))
                also = f"; it rebooted ({rebooted})" if rebooted else ""
                self.outbox.add(
                    people,
                    f"✅ {name} recovered after {lasted} (was: {incident.problem}){also}.",
                )
            return
        count = self._failures.get(name, 0) + 1
        self._failures[name] = count
        self._failing_since.setdefault(name, utcnow())
        if count >= self.alert_after and name not in incidents:
            incident = await self.records.open_incident(
                name, probe.problem, started_at=self._failing_since[name]
            )
            incidents[name] = incident
            self.outbox.add(people, f"🚨 {name}: {probe.problem} ({count} probes failed in a row).")

    async def _open_incidents(self) -> dict[str, Incident]:
        if self._incidents is None:
            self._incidents = await self.records.open_incidents()
        return self._incidents

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work, name="watcher-handover")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.outbox.close()
