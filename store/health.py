"""The watcher's tables: probe counts per hour, last checks, incidents, reboot tests.

Probes are counted per machine and hour rather than stored one row each: a hundred
machines probed every minute would otherwise add a million rows a week just to answer
"what share of the last 7 days was it up".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from store.database import Store, utcnow


@dataclass(frozen=True)
class CheckRecord:
    machine: str
    at: str
    state: str
    ok: bool
    summary: str


@dataclass(frozen=True)
class Incident:
    id: int
    machine: str
    started_at: str
    alerted_at: str
    ended_at: str
    problem: str


@dataclass(frozen=True)
class RebootTestRecord:
    id: int
    machine: str
    job_id: int | None
    trigger: str
    started_at: str
    finished_at: str
    ok: bool
    stage: str
    stages: dict[str, float]
    summary: str


@dataclass(frozen=True)
class MachineEvent:
    """An unexpected reboot (``reboot``) or a finished unlock and its wait (``unlock``)."""

    machine: str
    at: str
    kind: str
    seconds: float | None
    detail: str


@dataclass(frozen=True)
class WeekRecords:
    """Everything recorded since a moment, per machine, for the report."""

    probes: dict[str, tuple[int, int]]  # machine -> (probes, up)
    events: list[MachineEvent]
    incidents: list[Incident]
    reboot_tests: list[RebootTestRecord]


REBOOT_EVENT, UNLOCK_EVENT = "reboot", "unlock"


def _hour(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H")


def _incident(row: dict[str, Any]) -> Incident:
    return Incident(
        id=row["id"],
        machine=row["machine"],
        started_at=row["started_at"],
        alerted_at=row["alerted_at"] or "",
        ended_at=row["ended_at"] or "",
        problem=row["problem"],
    )


def _reboot_test(row: dict[str, Any]) -> RebootTestRecord:
    return RebootTestRecord(
        id=row["id"],
        machine=row["machine"],
        job_id=row["job_id"],
        trigger=row["trigger"] or "",
        started_at=row["started_at"],
        finished_at=row["finished_at"] or "",
        ok=bool(row["ok"]),
        stage=row["stage"] or "",
        stages=json.loads(row["stages"] or "{}"),
        summary=row["summary"] or "",
    )


class HealthStore:
    """Health records, written on the store's own thread like everything else."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- probes and uptime ---------------------------------------------------------------

    async def record_probe(self, machine: str, *, up: bool) -> None:
        hour = _hour(datetime.now(UTC))

        def write() -> None:
            self.store.db.execute(
                "insert into probe_hours (machine, hour, probes, up) values (?, ?, 1, ?) "
                "on conflict (machine, hour) do update set probes = probes + 1, up = up + ?",
                [machine, hour, int(up), int(up)],
            )

        await self.store.write(write)

    async def prune_probes(self, before: datetime) -> int:
        """Forget the probe counts of hours before ``before``; how many rows went."""
        hour = _hour(before)

        def write() -> int:
            cursor = self.store.db.execute("delete from probe_hours where hour < ?", [hour])
            return int(cursor.rowcount)

        return await self.store.call(write)

    async def uptime_share(self, machine: str, days: int = 7) -> float | None:
        """Share of probes that found the machine up over the last ``days``; None if none."""
        since = _hour(datetime.now(UTC) - timedelta(days=days))

        def read() -> float | None:
            row = next(
                iter(
                    self.store.db.query(
                        "select sum(probes) as probes, sum(up) as up from probe_hours "
                        "where machine = ? and hour >= ?",
                        [machine, since],
                    )
                )
            )
            if not row["probes"]:
                return None
            return float(row["up"]) / float(row["probes"])

        return await self.store.call(read)

    async def probe_counts(self, since: datetime) -> dict[str, tuple[int, int]]:
        """Per machine, probes and the probes that found it up, in the hours from ``since``."""
        hour = _hour(since)

        def read() -> dict[str, tuple[int, int]]:
            rows = self.store.db.query(
                "select machine, sum(probes) as probes, sum(up) as up from probe_hours "
                "where hour >= ? group by machine",
                [hour],
            )
            return {r["machine"]: (int(r["probes"] or 0), int(r["up"] or 0)) for r in rows}

        return await self.store.call(read)

    # -- events the report counts ----------------------------------------------------------

    async def record_event(
        self, machine: str, kind: str, *, seconds: float | None = None, detail: str = ""
    ) -> None:
        record = {
            "machine": machine,
            "at": utcnow(),
            "kind": kind,
            "seconds": seconds,
            "detail": detail[:200],
        }
        await self.store.write(lambda: self.store.db.table("machine_events").insert(record))

    async def week(self, since: datetime) -> WeekRecords:
        """Probe counts, events, incidents and finished reboot tests since ``since``."""
        at = since.astimezone(UTC).isoformat(timespec="milliseconds")
        probes = await self.probe_counts(since)

        def read() -> WeekRecords:
            db = self.store.db
            events = [
                MachineEvent(r["machine"], r["at"], r["kind"], r["seconds"], r["detail"] or "")
                for r in db.query("select * from machine_events where at >= ? order by id", [at])
            ]
            incidents = [
                _incident(r)
                for r in db.query("select * from incidents where started_at >= ? order by id", [at])
            ]
            tests = [
                _reboot_test(r)
                for r in db.query(
                    "select * from reboot_tests where started_at >= ? "
                    "and finished_at is not null order by id",
                    [at],
                )
            ]
            return WeekRecords(probes, events, incidents, tests)

        return await self.store.call(read)

    # -- health checks -------------------------------------------------------------------

    async def save_check(self, machine: str, *, state: str, ok: bool, summary: str) -> None:
        record = {
            "machine": machine,
            "at": utcnow(),
            "state": state,
            "ok": int(ok),
            "summary": summary[:1000],
        }

        def write() -> None:
            self.store.db.execute(
                "insert into health_checks (machine, at, state, ok, summary) "
                "values (:machine, :at, :state, :ok, :summary) on conflict (machine) do update "
                "set at = :at, state = :state, ok = :ok, summary = :summary",
                record,
            )

        await self.store.write(write)

    async def last_check(self, machine: str) -> CheckRecord | None:
        def read() -> CheckRecord | None:
            rows = list(
                self.store.db.query("select * from health_checks where machine = ?", [machine])
            )
            if not rows:
                return None
            row = rows[0]
            return CheckRecord(
                row["machine"], row["at"], row["state"], bool(row["ok"]), row["summary"]
            )

        return await self.store.call(read)

    # -- incidents -----------------------------------------------------------------------

    async def open_incident(self, machine: str, problem: str, *, started_at: str) -> Incident:
        now = utcnow()

        def write() -> Incident:
            table = self.store.db.table("incidents")
            table.insert(
                {
                    "machine": machine,
                    "started_at": started_at,
                    "alerted_at": now,
                    "problem": problem[:500],
                }
            )
            row = next(
                iter(
                    self.store.db.query("select * from incidents where id = ?", [table.last_rowid])
                )
            )
            return _incident(row)

        return await self.store.call(write)

    async def open_incidents(self) -> dict[str, Incident]:
        def read() -> dict[str, Incident]:
            rows = self.store.db.query(
                "select * from incidents where ended_at is null or ended_at = '' order by id"
            )
            return {row["machine"]: _incident(row) for row in rows}

        return await self.store.call(read)

    async def close_incident(self, incident_id: int) -> None:
        now = utcnow()
        await self.store.call(
            lambda: self.store.db.table("incidents").update(incident_id, {"ended_at": now})
        )

    # -- reboot tests --------------------------------------------------------------------

    async def start_reboot_test(self, machine: str, *, job_id: int | None, trigger: str) -> int:
        record = {
            "machine": machine,
            "job_id": job_id,
            "trigger": trigger[:200],
            "started_at": utcnow(),
        }

        def write() -> int:
            table = self.store.db.table("reboot_tests")
            table.insert(record)
            assert table.last_rowid is not None
            return table.last_rowid

        return await self.store.call(write)

    async def finish_reboot_test(
        self, test_id: int, *, ok: bool, stage: str, stages: dict[str, float], summary: str
    ) -> None:
        fields = {
            "finished_at": utcnow(),
            "ok": int(ok),
            "stage": stage,
            "stages": json.dumps(stages),
            "summary": summary[:1000],
        }
        await self.store.call(lambda: self.store.db.table("reboot_tests").update(test_id, fields))

    async def prune_reboot_tests(self, before: str) -> int:
        """Forget reboot tests started before ``before``, except each machine's last
        finished one (what /status shows); how many went."""

        def write() -> int:
            cursor = self.store.db.execute(
                "delete from reboot_tests where started_at < ? and id not in "
                "(select max(id) from reboot_tests where finished_at is not null "
                "group by machine)",
                [before],
            )
            return int(cursor.rowcount)

        return await self.store.call(write)

    async def prune_incidents(self, before: str) -> int:
        """Forget incidents that ended before ``before`` (open ones stay); how many went."""

        def write() -> int:
            cursor = self.store.db.execute(
                "delete from incidents where coalesce(ended_at, '') != '' and ended_at < ?",
                [before],
            )
            return int(cursor.rowcount)

        return await self.store.call(write)

    async def prune_machine_events(self, before: str) -> int:
        """Forget the report's events (reboots seen, unlock waits) before ``before``."""

        def write() -> int:
            cursor = self.store.db.execute("delete from machine_events where at < ?", [before])
            return int(cursor.rowcount)

        return await self.store.call(write)

    async def last_reboot_test(self, machine: str) -> RebootTestRecord | None:
        def read() -> RebootTestRecord | None:
            rows = list(
                self.store.db.query(
                    "select * from reboot_tests where machine = ? and finished_at is not null "
                    "order by id desc limit 1",
                    [machine],
                )
            )
            return _reboot_test(rows[0]) if rows else None

        return await self.store.call(read)
