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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.flows.basics import Basics
from bot.flows.unlock import Unlocker
from bot.flows.watch.outbox import Outbox
from bot.remote.health import Probe
from bot.remote.place import Place
from store import MachineState, utcnow
from store.health import REBOOT_EVENT, Incident

log = logging.getLogger(__name__)


def since(iso: str) -> float:
    """Seconds from an ISO timestamp of the store until now."""
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return 0.0
    return max(0.0, (datetime.fromisoformat(utcnow()) - then).total_seconds())


@dataclass
class Watched:
    """What the watcher keeps of one machine between probes."""

    #: Failed probes in a row, and when the first of them was.
    failures: int = 0
    failing_since: str = ""
    #: Its people were told it waits in its initrd (not told again until it leaves).
    initrd_told: bool = False
    #: Flows that own the machine now (a reboot test): no probes, counts or alerts.
    silenced: int = 0
    #: The incident open for it, once its people were alerted.
    incident: Incident | None = None

    def start_afresh(self) -> None:
        """Forget the run of failures and the initrd notice (a flow or a reload ended)."""
        self.failures, self.failing_since, self.initrd_told = 0, "", False

    @property
    def idle(self) -> bool:
        """Nothing worth keeping: the machine's entry can go."""
        return not (self.failures or self.initrd_told or self.silenced or self.incident)


class Watcher:
    """Probes machines, bounded in number at a time, and turns results into incidents."""

    def __init__(
        self,
        basics: Basics,
        *,
        outbox: Outbox,
        unlocker: Unlocker,
    ) -> None:
        self.current, self.fleet, self.access = basics.current, basics.fleet, basics.access
        self.store, self.health = basics.store, basics.health
        self.outbox = outbox
        self.unlocker = unlocker
        self.alert_after = basics.tuning.alert_after
        # The example inventory names hosts that are not the user's: never probe them.
        self.enabled = basics.probes_enabled
        self._slots = asyncio.Semaphore(basics.tuning.probe_concurrency)
        self._watched: dict[str, Watched] = {}
        self._incidents_read = False
        self._tasks: set[asyncio.Task[object]] = set()

    # -- silencing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def silence(self, name: str) -> Iterator[None]:
        """No probes, counts or alerts for ``name`` while a flow (a reboot test) owns it."""
        self._of(name).silenced += 1
        try:
            yield
        finally:
            watched = self._of(name)
            watched.silenced -= 1
            watched.start_afresh()
            self._drop_if_idle(name)

    def silenced(self, name: str) -> bool:
        watched = self._watched.get(name)
        return watched is not None and watched.silenced > 0

    def forget(self, names: Iterable[str]) -> None:
        """Drop the counts of machines a reload removed, so one added back starts afresh."""
        for name in names:
            if name in self._watched:
                self._watched[name].start_afresh()
                self._drop_if_idle(name)

    def _of(self, name: str) -> Watched:
        return self._watched.setdefault(name, Watched())

    def _drop_if_idle(self, name: str) -> None:
        if self._watched[name].idle:
            del self._watched[name]

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
            check = self.health.save_check(
                machine.name, state=probe.state.value, ok=probe.ok, summary=probe.health.summary()
            )
        else:
            check = self.health.save_check(
                machine.name, state=probe.state.value, ok=False, summary=probe.problem
            )
        writes = [check, self.store.update_machine(machine.name, **fields)]
        if counted:
            writes.append(self.health.record_probe(machine.name, up=probe.state is Place.SYSTEM))
        await asyncio.gather(*writes)

    async def _judge(self, machine: Machine, known: MachineState, probe: Probe) -> None:
        name = machine.name
        people = self.access.people_for(machine)
        await self._record(machine, probe, counted=True)
        await self._read_incidents()
        watched = self._of(name)
        rebooted = ""
        if probe.health is not None:
            new = probe.health.boot_id
            if known.boot_id and new and new != known.boot_id:
                rebooted = f"boot id {known.boot_id[:8]} → {new[:8]}"
                await self.health.record_event(name, REBOOT_EVENT, detail=rebooted)
            told, watched.initrd_told = watched.initrd_told, False
            if rebooted and not told and watched.incident is None:
                uptime = probe.health.uptime
                up = f", up {format_duration(uptime)}" if uptime is not None else ""
                self.outbox.add(people, f"⚠️ {name} rebooted unexpectedly ({rebooted}{up}).")
        if probe.state is Place.INITRD and not watched.initrd_told:
            watched.initrd_told = True
            self.outbox.add(
                people, f"⚠️ {name} rebooted unexpectedly and waits in its initrd: unlocking it."
            )
            if not self.unlocker.active(name):
                self._spawn(
                    self.unlocker.unlock(machine, trigger="the watcher found it in its initrd")
                )
        if probe.ok:
            incident, watched.incident = watched.incident, None
            watched.failures, watched.failing_since = 0, ""
            self._drop_if_idle(name)
            if incident is not None:
                await self.health.close_incident(incident.id)
                lasted = format_duration(since(incident.started_at))
                also = f"; it rebooted ({rebooted})" if rebooted else ""
                self.outbox.add(
                    people,
                    f"✅ {name} recovered after {lasted} (was: {incident.problem}){also}.",
                )
            return
        watched.failures += 1
        watched.failing_since = watched.failing_since or utcnow()
        count = watched.failures
        if count >= self.alert_after and watched.incident is None:
            incident = await self.health.open_incident(
                name, probe.problem, started_at=watched.failing_since
            )
            self._of(name).incident = incident
            self.outbox.add(people, f"🚨 {name}: {probe.problem} ({count} probes failed in a row).")

    async def _read_incidents(self) -> None:
        """The incidents a previous process left open, read once: they go on."""
        if self._incidents_read:
            return
        for name, incident in (await self.health.open_incidents()).items():
            watched = self._of(name)
            watched.incident = watched.incident or incident
        self._incidents_read = True

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
