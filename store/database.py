"""The bot's SQLite database, reached from asyncio through one dedicated thread.

sqlite-utils connections are bound to the thread that opened them, and SQLite itself
serialises writers; one worker thread gives both for free and keeps the event loop
unblocked. The table modules beside it (health) reach the database through ``call()``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from bot.core.files import private_file
from bot.core.text import printable
from store.migrations import migrations
from store.records import (
    JOB_ACTIVE_STATES,
    AuditEntry,
    Job,
    JobEvent,
    MachineState,
    audit_from_row,
    event_from_row,
    job_from_row,
    machine_from_row,
)

T = TypeVar("T")
_MACHINE_FIELDS = frozenset(MachineState.__dataclass_fields__) - {"name"}
# Bounds of what is stored from targets and jobs (characters).
MAX_FIELD = 4000
MAX_TEXT = {"detail": 2000}
MAX_RESULT = 4000
MAX_EVENT = 2000
_JOB_FIELDS = frozenset(Job.__dataclass_fields__) - {"id", "kind", "machine", "created_at"}


def utcnow() -> str:
    """Timestamps are stored as ISO 8601 UTC text, which sorts as time does."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _transient(exc: sqlite3.OperationalError) -> bool:
    """Errors another try may fix: a lock held elsewhere, a full or failing disk."""
    text = str(exc).lower()
    return any(word in text for word in ("locked", "busy", "full", "disk i/o"))


class JobConflict(Exception):
    """The machine already has a job in progress."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"{job.machine} already has job {job.id} ({job.kind}, {job.state})")


class StoreUnavailable(sqlite3.OperationalError):
    """The database cannot be written now (locked by another program, disk full …).

    A subclass of sqlite3's error so nothing that already catches it changes; callers that
    can wait or tell the user catch this one.
    """


DEFAULT_BUSY_TIMEOUT = 10.0


def _unavailable(exc: BaseException) -> BaseException:
    """A transient sqlite3 error as StoreUnavailable, as ``Store.call`` raises it."""
    transient = isinstance(exc, sqlite3.OperationalError) and _transient(exc)
    if transient and not isinstance(exc, StoreUnavailable):
        return StoreUnavailable(str(exc))
    return exc


class Store:
    """Async facade over the database; every public method runs on the store's own thread."""

    def __init__(self, path: Path | str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: Database | None = None
        self._waiting: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._committing: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path | str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Store:
        """Open (and migrate) the database; a writer waits ``busy_timeout`` s for a lock."""
        store = cls(path, busy_timeout=busy_timeout)
        await store.call(store._open)
        return store

    def _open(self) -> None:
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if str(self.path) != ":memory:":
            private_file(self.path, "-wal", "-shm", "-journal")
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout)
        db = Database(conn)
        db.enable_wal()
        db.execute("PRAGMA foreign_keys = ON")
        migrations.apply(db)
        self._db = db

    async def close(self) -> None:
        if self._committing is not None:
            await asyncio.shield(self._committing)
        if self._db is not None:
            await self.call(self._db.conn.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the store's own thread (the only thread that touches the database);
        for the store package's table modules, such as ``store.health``."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:
            if isinstance(exc, StoreUnavailable) or not _transient(exc):
                raise
            raise StoreUnavailable(str(exc)) from exc

    async def write(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a transaction shared with the writes waiting beside it.

        A fleet's probes each write a few rows; one commit (one fsync) per write would make
        the disk the bound of a probe round. Writes that arrive while a commit is under way
        wait for the next one, each in its own savepoint, so one failing write fails alone;
        a caller resumes only once its write is committed.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((fn, future))
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_waiting(), name="store-commit")
        return await future

    async def _commit_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    outcomes = await self.call(self._run_batch, [fn for fn, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:
                    outcomes = [(False, exc)] * len(batch)
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(_unavailable(value))
        finally:
            self._committing = None

    def _run_batch(self, fns: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self.db.atomic():
            for fn in fns:
                try:
                    with self.db.atomic():
                        outcomes.append((True, fn()))
                except Exception as exc:
                    outcomes.append((False, exc))
        return outcomes

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("the store is closed")
        return self._db

    # -- audit ---------------------------------------------------------------------------

    async def audit(
        self,
        *,
        user_id: int | None,
        username: str,
        action: str,
        decision: str,
        machine: str = "",
        detail: str = "",
    ) -> int:
        """Record one decision and return its id; ``detail`` must never hold a secret
        (callers pass summaries). Names come from chat users: stored printable only."""
        record = {
            "at": utcnow(),
            "user_id": user_id,
            "username": printable(username, 64),
            "action": printable(action, 64),
            "machine": printable(machine, 64),
            "decision": printable(decision, 32),
            "detail": printable(detail, 500),
        }

        def write() -> int:
            entry_id = self.db.table("audit").insert(record).last_pk
            assert isinstance(entry_id, int)
            return entry_id

        return await self.call(write)

    async def update_audit(self, entry_id: int, *, detail: str, user_id: int | None = None) -> None:
        """Rewrite one entry's detail (a repeated refusal counted on its first line)."""
        fields: dict[str, object] = {"detail": printable(detail, 500)}
        if user_id is not None:
            fields["user_id"] = user_id
        await self.call(lambda: self.db.table("audit").update(entry_id, fields))

    async def prune_audit(self, before: str) -> int:
        """Forget the audit entries from before ``before``; how many went."""

        def write() -> int:
            return int(self.db.execute("delete from audit where at < ?", [before]).rowcount)

        return await self.call(write)

    async def recent_audit(self, limit: int = 20) -> list[AuditEntry]:
        def read() -> list[AuditEntry]:
            rows = self.db.query("select * from audit order by id desc limit ?", [limit])
            return [audit_from_row(row) for row in rows]

        return await self.call(read)

    # -- machines ------------------------------------------------------------------------

    async def machine(self, name: str) -> MachineState:
        def read() -> MachineState:
            rows = list(self.db.query("select * from machines where name = ?", [name]))
            return machine_from_row(rows[0]) if rows else MachineState(name=name)

        return await self.call(read)

    async def machines(self) -> dict[str, MachineState]:
        def read() -> dict[str, MachineState]:
            return {
                row["name"]: machine_from_row(row)
                for row in self.db.query("select * from machines")
            }

        return await self.call(read)

    async def update_machine(self, name: str, **fields: str) -> MachineState:
        """Set some columns of a machine's row; a changed ``state`` also moves ``state_since``."""
        unknown = set(fields) - _MACHINE_FIELDS
        if unknown:
            raise ValueError(f"unknown machine fields: {sorted(unknown)}")
        # Plain text only: a state may arrive as a StrEnum member. What a target said is
        # kept printable and bounded: a machine printing 150 MB must not fill the database.
        fields = {
            name: printable(str(value), MAX_TEXT.get(name, MAX_FIELD), newlines=True)
            for name, value in fields.items()
        }

        def write() -> MachineState:
            # Plain SQL: sqlite-utils' upsert reads the table's schema on every call, and a
            # fleet's probes write here once each.
            conn = self.db.conn
            cursor = conn.execute("select * from machines where name = ?", [name])
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
            current = dict(zip(names, row, strict=True)) if row is not None else {"name": name}
            if "state" in fields and fields["state"] != current.get("state"):
                fields.setdefault("state_since", utcnow())
            columns = sorted(fields)
            if row is None:
                listed = ", ".join(["name", *columns])
                marks = ", ".join("?" for _ in range(len(columns) + 1))
                conn.execute(
                    f"insert into machines ({listed}) values ({marks})",  # noqa: S608 - known column names only
                    [name, *(fields[c] for c in columns)],
                )
            elif columns:
                sets = ", ".join(f"{c} = ?" for c in columns)
                conn.execute(
                    f"update machines set {sets} where name = ?",  # noqa: S608 - known column names only
                    [*(fields[c] for c in columns), name],
                )
            return machine_from_row({**current, **fields})

        return await self.write(write)

    # -- jobs ----------------------------------------------------------------------------

    async def create_job(
        self, *, kind: str, machine: str, user_id: int | None, chat_id: int | None
    ) -> Job:
        """Insert a queued job, or raise JobConflict when the machine already has one."""

        def write() -> Job:
            with self.db.atomic():
                active = self._active_for(machine)
                if active is not None:
                    raise JobConflict(active)
                table = self.db.table("jobs")
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
                job_id = table.last_rowid
            assert job_id is not None
            return self._job(job_id)

        return await self.call(write)

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

    async def integrity_check(self) -> str:
        def read() -> str:
            return str(next(iter(self.db.query("pragma integrity_check")))["integrity_check"])

        return await self.call(read)
