"""History stays bounded: probe counts, job logs, reboot tests, ended incidents and
systemd tries older than DEPLOYBOT_KEEP_DAYS go; the audit log stays a year at least."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config.settings import SettingsError, load_settings
from store.health import HealthStore
from tests.botrig import BotRig
from tests.people import ADMIN

INVENTORY = '[machines.web]\nhost = "127.0.0.1"\nssh_port = 1\n'
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def add_probe_hour(rig: BotRig, machine: str, at: datetime) -> None:
    store = rig.svc.store
    hour = at.strftime("%Y-%m-%dT%H")
    await store.call(
        lambda: store.db.execute(
            "insert into probe_hours (machine, hour, probes, up) values (?, ?, 1, 1)",
            [machine, hour],
        )
    )


def write(path: Path, text: str, *, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


async def finished_job(rig: BotRig, ended: datetime, log: Path | None) -> int:
    store = rig.svc.store
    job = await store.create_job(kind="deploy", machine="web", user_id=ADMIN, chat_id=ADMIN)
    await store.add_event(job.id, "phase", "preflight")
    if log is not None:
        await asyncio.to_thread(write, log, f"job {job.id}\n")
    await store.update_job(
        job.id,
        state="succeeded",
        finished_at=ended.isoformat(timespec="milliseconds"),
        log_path=str(log) if log is not None else "",
    )
    return job.id


async def test_old_probe_counts_and_job_logs_are_pruned(rig: BotRig, tmp_path: Path) -> None:
    await rig.start(INVENTORY)
    store, health = rig.svc.store, HealthStore(rig.svc.store)
    jobs_dir = rig.svc.basics.jobs.log_dir
    old, recent = NOW - timedelta(days=91), NOW - timedelta(days=89)
    for at in (old, old + timedelta(hours=1), recent, NOW):
        await add_probe_hour(rig, "web", at)
    old_job = await finished_job(rig, old, jobs_dir / "1.log")
    recent_job = await finished_job(rig, recent, jobs_dir / "2.log")
    outside = tmp_path / "elsewhere" / "3.log"  # a row naming a file outside state/jobs
    outside_job = await finished_job(rig, old, outside)
    orphan = jobs_dir / "999.log"
    await asyncio.to_thread(write, orphan, "from a lost row\n", mtime=old.timestamp())

    pruned = await rig.svc.engine.retention.prune(NOW)

    assert pruned.probe_hours == 2
    assert pruned.job_logs == 2
    hours = await store.call(
        lambda: [r["hour"] for r in store.db.query("select hour from probe_hours order by hour")]
    )
    assert hours == [recent.strftime("%Y-%m-%dT%H"), NOW.strftime("%Y-%m-%dT%H")]
    assert sorted(p.name for p in jobs_dir.iterdir()) == ["2.log"]
    assert outside.exists()
    for job_id, kept in ((old_job, False), (recent_job, True), (outside_job, False)):
        job = await store.job(job_id)
        assert job is not None
        assert job.state == "succeeded"  # the job itself is remembered
        assert bool(job.log_path) is kept
        assert bool(await store.events(job_id)) is kept
    assert await health.uptime_share("web", days=3650) == 1.0
    again = await rig.svc.engine.retention.prune(NOW)
    assert (again.probe_hours, again.job_logs) == (0, 0)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


async def insert(rig: BotRig, table: str, rows: list[dict[str, object]]) -> None:
    store = rig.svc.store
    await store.call(lambda: store.db.table(table).insert_all(rows))


async def column(rig: BotRig, sql: str) -> list[object]:
    store = rig.svc.store
    return await store.call(lambda: [next(iter(r.values())) for r in store.db.query(sql)])


async def test_old_reboot_tests_incidents_and_tries_are_pruned(rig: BotRig) -> None:
    await rig.start(INVENTORY + '[machines.db]\nhost = "127.0.0.2"\nssh_port = 1\n')
    old, recent = NOW - timedelta(days=91), NOW - timedelta(days=89)
    test = {"trigger": "scheduled", "ok": 1, "stage": "done", "stages": "{}", "summary": "ok"}
    await insert(
        rig,
        "reboot_tests",
        [
            {**test, "machine": "web", "started_at": iso(old), "finished_at": iso(old)},
            {**test, "machine": "web", "started_at": iso(recent), "finished_at": iso(recent)},
            {**test, "machine": "db", "started_at": iso(old), "finished_at": iso(old)},
            # db's last one, unfinished: its last finished one above stays.
            {**test, "machine": "db", "started_at": iso(old), "finished_at": None},
        ],
    )
    await insert(
        rig,
        "incidents",
        [
            {"machine": "web", "started_at": iso(old), "ended_at": iso(old), "problem": "a"},
            {"machine": "web", "started_at": iso(old), "ended_at": "", "problem": "still open"},
            {"machine": "db", "started_at": iso(old), "ended_at": iso(recent), "problem": "b"},
        ],
    )
    await insert(
        rig,
        "systemd_tries",
        [
            {"machine": "web", "boot_id": "b1", "query": "q", "tries": 3, "at": iso(old)},
            {"machine": "web", "boot_id": "b2", "query": "q", "tries": 1, "at": iso(recent)},
        ],
    )

    await insert(
        rig,
        "machine_events",
        [
            {"machine": "web", "at": iso(old), "kind": "reboot", "seconds": 0.0, "detail": ""},
            {"machine": "web", "at": iso(recent), "kind": "unlock", "seconds": 9.0, "detail": ""},
        ],
    )

    pruned = await rig.svc.engine.retention.prune(NOW)

    assert (pruned.reboot_tests, pruned.incidents, pruned.systemd_tries) == (2, 1, 1)
    assert pruned.machine_events == 1
    assert await column(rig, "select kind from machine_events") == ["unlock"]
    assert await column(rig, "select id from reboot_tests order by id") == [2, 3]
    assert await column(rig, "select problem from incidents order by id") == ["still open", "b"]
    assert await column(rig, "select boot_id from systemd_tries") == ["b2"]
    last = await rig.svc.engine.basics.health.last_reboot_test("db")
    assert last is not None
    assert last.id == 3
    again = await rig.svc.engine.retention.prune(NOW)
    assert (again.reboot_tests, again.incidents, again.systemd_tries) == (0, 0, 0)
    assert again.machine_events == 0


@pytest.mark.parametrize(
    ("keep_days", "kept"),
    [
        # A year by default: entries older than DEPLOYBOT_KEEP_DAYS stay.
        (90, {89: True, 91: True, 364: True, 366: False}),
        # Longer keep days keep the audit as long.
        (400, {364: True, 399: True, 401: False}),
    ],
)
async def test_the_audit_log_is_kept_a_year_or_keep_days_when_longer(
    rig: BotRig, keep_days: int, kept: dict[int, bool]
) -> None:
    rig.env["DEPLOYBOT_KEEP_DAYS"] = str(keep_days)
    await rig.start(INVENTORY)
    entry = {"user_id": ADMIN, "action": "deploy", "decision": "allowed", "machine": "web"}
    await insert(rig, "audit", [{**entry, "at": iso(NOW - timedelta(days=d))} for d in kept])

    pruned = await rig.svc.engine.retention.prune(NOW)

    left = set(await column(rig, "select at from audit"))
    assert {d: iso(NOW - timedelta(days=d)) in left for d in kept} == kept
    assert pruned.audit == list(kept.values()).count(False)


async def test_log_of_a_pruned_job_says_so(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    job_id = await finished_job(
        rig, datetime.now(UTC) - timedelta(days=100), rig.svc.basics.jobs.log_dir / "1.log"
    )
    await rig.svc.engine.retention.prune()
    admin = rig.tg.user(ADMIN, "root_admin")
    await rig.tg.send_text(admin, f"/log {job_id}")
    told = await rig.tg.wait_for_message(admin, lambda m: "not available" in m.body)
    assert "never written, or removed" in told.body


def test_keep_days_is_a_setting() -> None:
    assert load_settings(None, {}).keep_days == 90
    assert load_settings(None, {"DEPLOYBOT_KEEP_DAYS": "30"}).keep_days == 30
    for bad in ("0", "-1", "ninety", "1e3"):
        with pytest.raises(SettingsError, match="DEPLOYBOT_KEEP_DAYS"):
            load_settings(None, {"DEPLOYBOT_KEEP_DAYS": bad})
