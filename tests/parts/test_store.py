"""The store: migrations, WAL, jobs with one active per machine, audit, interrupted jobs."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from store import JobConflict, Store


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "db" / "bot.sqlite3")
    try:
        yield opened
    finally:
        await opened.close()


async def test_schema_is_migrated_with_wal(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    try:
        mode = conn.execute("pragma journal_mode").fetchone()[0]
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    finally:
        conn.close()
    assert mode == "wal"
    assert {"machines", "jobs", "job_events", "audit", "_sqlite_migrations"} <= tables
    assert await store.integrity_check() == "ok"


async def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    for _ in range(2):
        store = await Store.open(path)
        await store.close()
    conn = sqlite3.connect(path)
    try:
        names = [row[0] for row in conn.execute("select name from _sqlite_migrations")]
    finally:
        conn.close()
    assert names[0] == "m001_initial"
    assert len(names) == len(set(names))


async def test_one_active_job_per_machine(store: Store) -> None:
    job = await store.create_job(kind="deploy", machine="web", user_id=1, chat_id=1)
    with pytest.raises(JobConflict) as caught:
        await store.create_job(kind="deploy", machine="web", user_id=2, chat_id=2)
    assert caught.value.job.id == job.id
    other = await store.create_job(kind="deploy", machine="db", user_id=1, chat_id=1)
    assert other.id != job.id
    await store.update_job(job.id, state="succeeded")
    again = await store.create_job(kind="reinstall", machine="web", user_id=1, chat_id=1)
    assert again.state == "queued"


async def test_interrupted_jobs_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    store = await Store.open(path)
    running = await store.create_job(kind="deploy", machine="web", user_id=1, chat_id=5)
    await store.update_job(running.id, state="running")
    done = await store.create_job(kind="deploy", machine="db", user_id=1, chat_id=5)
    await store.update_job(done.id, state="failed")
    await store.close()
    store = await Store.open(path)
    try:
        interrupted = await store.interrupt_active_jobs()
        assert [j.id for j in interrupted] == [running.id]
        assert interrupted[0].state == "interrupted"
        assert (await store.job(done.id)).state == "failed"  # type: ignore[union-attr]
        assert [e.text for e in await store.events(running.id)] == ["interrupted"]
    finally:
        await store.close()


async def test_machine_state_tracks_since(store: Store) -> None:
    assert (await store.machine("web")).state == "unknown"
    first = await store.update_machine("web", state="up", boot_id="b1")
    same = await store.update_machine("web", state="up", detail="ok")
    assert same.state_since == first.state_since
    changed = await store.update_machine("web", state="down")
    assert changed.state_since >= first.state_since
    assert (await store.machine("web")).boot_id == "b1"
    with pytest.raises(ValueError, match="unknown machine fields"):
        await store.update_machine("web", passphrase="x")


async def test_audit_newest_first_and_bounded(store: Store) -> None:
    for n in range(25):
        await store.audit(user_id=n, username="u", action="/status", decision="allowed")
    entries = await store.recent_audit(20)
    assert len(entries) == 20
    assert entries[0].user_id == 24


async def test_database_work_runs_off_the_event_loop_thread(store: Store) -> None:
    seen: list[str] = []
    await store.call(lambda: seen.append(threading.current_thread().name))
    assert seen[0].startswith("store")
    assert seen[0] != threading.current_thread().name


async def test_a_machine_known_only_by_its_keys_is_in_state_unknown(store: Store) -> None:
    pinned = await store.update_machine("web", host_key="ssh-ed25519 AAAA")
    assert pinned.state == "unknown"
    assert (await store.machine("web")).state == "unknown"


async def test_recent_jobs_of_quiet_machines_are_found_behind_busy_ones(store: Store) -> None:
    """An operator of a quiet machine sees its jobs however many the others have since."""
    quiet = await store.create_job(kind="deploy", machine="quiet", user_id=1, chat_id=1)
    await store.update_job(quiet.id, state="succeeded")
    for _ in range(150):
        job = await store.create_job(kind="reboot-test", machine="busy", user_id=2, chat_id=2)
        await store.update_job(job.id, state="succeeded")
    mine = await store.recent_jobs(10, machines={"quiet"})
    assert [j.id for j in mine] == [quiet.id]
    everything = await store.recent_jobs(10)
    assert len(everything) == 10
    assert all(j.machine == "busy" for j in everything)
    assert await store.recent_jobs(10, machines=set()) == []
