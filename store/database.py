"""The bot's SQLite database, reached from asyncio through one dedicated thread.

sqlite-utils connections are bound to the thread that opened them, and SQLite itself
serialises writers; one worker thread gives both and keeps the event loop unblocked.
``write()`` lets a fleet's probes share one commit. The audit and machines tables are
here; jobs (``store.jobs``) and health (``store.health``) have modules of their own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from bot.core.files import private_file
from bot.core.text import printable
from store.jobs import JobConflict, JobTable
from store.migrations import migrations
from store.records import AuditEntry, MachineState, audit_from_row, machine_from_row, utcnow

T = TypeVar("T")
_MACHINE_FIELDS = frozenset(MachineState.__dataclass_fields__) - {"name"}
# Bounds of what is stored of what targets said (characters).
MAX_FIELD = 4000
MAX_TEXT = {"detail": 2000}
__all__ = ["JobConflict", "Store", "StoreUnavailable", "utcnow"]


def _transient(exc: sqlite3.OperationalError) -> bool:
    """Errors another try may fix: a lock held elsewhere, a full or failing disk."""
    text = str(exc).lower()
    return any(word in text for word in ("locked", "busy", "full", "disk i/o"))


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


class Store(JobTable):
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

    async def integrity_check(self) -> str:
        def read() -> str:
            return str(next(iter(self.db.query("pragma integrity_check")))["integrity_check"])

        return await self.call(read)
