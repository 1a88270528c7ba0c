"""The jobs table and each job's events: one active job per machine, kept by SQL.

A job is created only inside the transaction that finds the machine without an active
one, so two commands racing for a machine cannot both start (``JobConflict``). What a job
reports is stored printable and bounded. ``Store`` carries these methods and runs them on
its thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlite_utils import Database

from bot.core.text import printable
from store.records import JOB_ACTIVE_STATES, Job, JobEvent, event_from_row, job_from_row, utcnow

T = TypeVar("T")
# Bounds of what is stored of a job (characters).
MAX_RESULT = 4000
MAX_EVENT = 2000
_JOB_FIELDS = frozenset(Job.__dataclass_fields__) - {"id", "kind", "machine", "created_at"}


class JobConflict(Exception):
    """The machine already has a job in progress."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"{job.machine} already has job {job.id} ({job.kind}, {job.state})")


class JobTable:
    """The job methods of ``Store``, which provides ``db`` and ``call`` (its thread)."""

    @property
    def db(self) -> Database:
        raise NotImplementedError

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def create_job(
        self, *, kind: str, machine: str, user_id: int | None, chat_id: int | None
    ) -> Job:
        """Insert a queued job, or raise JobConflict when the machine already has one."""
        (job,) = await self.create_jobs(
            kind=kind, machines=[machine], user_id=user_id, chat_id=chat_id
        )
        return job

    async def create_jobs(
        self, *, kind: str, machines: list[str], user_id: int | None, chat_id: int | None
    ) -> list[Job]:
        """Queued jobs for all ``machines`` in one transaction, or none and JobConflict
        naming the first machine that already has one (a rollout's per-machine locks)."""

        def write() -> list[Job]:
            with self.db.atomic():
                for machine in machines:
                    active = self._active_for(machine)
                    if active is not None:
                        raise JobConflict(active)
                table = self.db.table("jobs")
                ids = []
                for machine in machines:
                    table.insert(
                        {
                            "kind": kind,
                            "machine": machine,
                            "state": "queued",
                            "phase": "",
                            "user_id": user_id,
                            "chat_id": chat_id,
                            "created_at": utcnow(),
                        }
                    )
                    assert table.last_rowid is not None
                    ids.append(table.last_rowid)
            return [self._job(job_id) for job_id in ids]

        return await self.call(write)

    def _active_for(self, machine: str) -> Job | None:
        marks = ",".join("?" for _ in JOB_ACTIVE_STATES)
        rows = list(
            self.db.query(
                f"select * from jobs where machine = ? and state in ({marks}) order by id limit 1",  # noqa: S608 - placeholders only
                [machine, *JOB_ACTIVE_STATES],
            )
        )
        return job_from_row(rows[0]) if rows else None

    def _job(self, job_id: int) -> Job:
        rows = list(self.db.query("select * from jobs where id = ?", [job_id]))
        if not rows:
            raise KeyError(job_id)
        return job_from_row(rows[0])

    async def job(self, job_id: int) -> Job | None:
        def read() -> Job | None:
            try:
                return self._job(job_id)
            except KeyError:
                return None

        return await self.call(read)

    async def active_job(self, machine: str) -> Job | None:
        return await self.call(self._active_for, machine)

    async def update_job(self, job_id: int, **fields: Any) -> Job:
        if isinstance(fields.get("result"), str):
            fields["result"] = printable(fields["result"], MAX_RESULT, newlines=True)
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")

        def write() -> Job:
            self.db.table("jobs").update(job_id, fields)
            return self._job(job_id)

        return await self.call(write)

    async def recent_jobs(self, limit: int = 10, machines: set[str] | None = None) -> list[Job]:
        """The newest ``limit`` jobs, of ``machines`` only when given (filtered in SQL, so
        quiet machines' older jobs are found however busy the others are)."""

        def read() -> list[Job]:
            if machines is None:
                rows = self.db.query("select * from jobs order by id desc limit ?", [limit])
            else:
                names = sorted(machines)
                marks = ",".join("?" for _ in names)
                rows = self.db.query(
                    f"select * from jobs where machine in ({marks}) order by id desc limit ?",  # noqa: S608 - placeholders only
                    [*names, limit],
                )
            return [job_from_row(row) for row in rows]

        return await self.call(read)

    async def interrupt_active_jobs(self) -> list[Job]:
        """At start: jobs left queued or running by a previous process become ``interrupted``."""

        def write() -> list[Job]:
            marks = ",".join("?" for _ in JOB_ACTIVE_STATES)
            with self.db.atomic():
                rows = list(
                    self.db.query(
                        f"select * from jobs where state in ({marks})",  # noqa: S608 - placeholders only
                        list(JOB_ACTIVE_STATES),
                    )
                )
                now = utcnow()
                for row in rows:
                    self.db.table("jobs").update(
                        row["id"],
                        {"state": "interrupted", "finished_at": now, "result": "bot restarted"},
                    )
                    self.db.table("job_events").insert(
                        {"job_id": row["id"], "at": now, "kind": "state", "text": "interrupted"}
                    )
            return [self._job(row["id"]) for row in rows]

        return await self.call(write)

    async def forget_job_logs(self, before: str) -> list[str]:
        """Jobs that ended before ``before`` lose their log: the events are deleted, the
        log path cleared and returned (the caller removes the files)."""

        def write() -> list[str]:
            marks = ",".join("?" for _ in JOB_ACTIVE_STATES)
            ended = "coalesce(nullif(finished_at, ''), created_at)"
            with self.db.atomic():
                rows = list(
                    self.db.query(
                        f"select id, log_path from jobs where state not in ({marks}) "  # noqa: S608 - placeholders only
                        f"and {ended} < ? and (coalesce(log_path, '') != '' or id in "
                        "(select job_id from job_events))",
                        [*JOB_ACTIVE_STATES, before],
                    )
                )
                for row in rows:
                    self.db.execute("delete from job_events where job_id = ?", [row["id"]])
                    self.db.table("jobs").update(row["id"], {"log_path": ""})
            return [str(row["log_path"]) for row in rows if row["log_path"]]

        return await self.call(write)

    async def add_event(self, job_id: int, kind: str, text: str) -> None:
        record = {
            "job_id": job_id,
            "at": utcnow(),
            "kind": printable(kind, 32),
            "text": printable(text, MAX_EVENT, newlines=True),
        }
        await self.call(lambda: self.db.table("job_events").insert(record))

    async def events(self, job_id: int) -> list[JobEvent]:
        def read() -> list[JobEvent]:
            rows = self.db.query("select * from job_events where job_id = ? order by id", [job_id])
            return [event_from_row(row) for row in rows]

        return await self.call(read)
