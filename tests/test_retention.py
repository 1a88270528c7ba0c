"""History stays bounded: probe counts and job logs older than DEPLOYBOT_KEEP_DAYS go."""

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
    store, records = rig.svc.store, HealthStore(rig.svc.store)
    jobs_dir = rig.svc.jobs.log_dir
    old, recent = NOW - timedelta(days=91), NOW - timedelta(days=89)
    for at in (old, old + timedelta(hours=1), recent, NOW):
        await add_probe_hour(rig, "web", at)
    old_job = await finished_job(rig, old, jobs_dir / "1.log")
    recent_job = await finished_job(rig, recent, jobs_dir / "2.log")
    outside = tmp_path / "elsewhere" / "3.log"  # a row naming a file outside state/jobs
    outside_job = await finished_job(rig, old, outside)
    orphan = jobs_dir / "999.log"
    await asyncio.to_thread(write, orphan, "from a lost row\n", mtime=old.timestamp())

    pruned = await rig.svc.retention.prune(NOW)

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
    assert await records.uptime_share("web", days=3650) == 1.0
    again = await rig.svc.retention.prune(NOW)
    assert (again.probe_hours, again.job_logs) == (0, 0)


async def test_log_of_a_pruned_job_says_so(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    job_id = await finished_job(
        rig, datetime.now(UTC) - timedelta(days=100), rig.svc.jobs.log_dir / "1.log"
    )
    await rig.svc.retention.prune()
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
