"""Fault matrix, the bot's own storage: a locked database and a full disk for the job log.

The bot says what is wrong in the chat, keeps answering, and records what happened once
it can.
"""

from __future__ import annotations

from tests.botrig import BotRig
from tests.faults.storage import exclusive_lock, integrity
from tests.people import OPERATOR
from tests.waiting import eventually
from tests.world import World

INVENTORY = f"""
[machines.web]
host = "127.0.0.1"
ssh_port = 1
operators = [{OPERATOR}]
"""
UNAVAILABLE = "⚠️ My database is unavailable right now (database is locked)"


async def test_locked_database_is_reported_and_the_bot_recovers(rig: BotRig) -> None:
    rig.db_busy_timeout = 0.2
    await rig.start(INVENTORY)
    op = rig.tg.user(OPERATOR, "opal")
    db = rig.settings.db
    with exclusive_lock(db):
        refused = await rig.ask(op, "/machines", timeout=20)
        assert refused.body.startswith(UNAVAILABLE), refused.body
        assert "I did nothing" in refused.body
        again = await rig.ask(op, "/deploy web", timeout=20)
        assert again.body.startswith(UNAVAILABLE)
    listed = await rig.ask(op, "/machines", timeout=20)
    assert "Machines (1)" in listed.body
    assert integrity(db) == "ok"
    audit = await rig.svc.store.recent_audit(5)
    assert [(e.action, e.decision) for e in audit][:1] == [("/machines", "allowed")]
    assert await rig.svc.store.recent_jobs() == []


async def test_a_passphrase_does_not_wait_for_the_database(world: World) -> None:
    """The answer is deleted and relayed before its audit entry is written: a database
    another program holds delays the entry, not the unlock."""
    host = world.lab.start_installed_host("luks")
    world.machine("clawsiecats", host)
    world.rig.db_busy_timeout = 60.0
    await world.start()
    await world.pin("clawsiecats", host)
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/unlock clawsiecats")
    await tg.wait_for_message(op, lambda m: "waiting for its disk passphrase" in m.body, timeout=20)
    with exclusive_lock(world.rig.settings.db):
        answer = await tg.send_text(op, host.luks_passphrase or "")
        await tg.wait_until(lambda: tg.is_deleted(op, answer.message_id), timeout=10)
        await host.wait_until(lambda: host.correct_attempts == 1, timeout=15, what="the relay")
    await tg.wait_for_message(op, lambda m: "🔓 clawsiecats unlocked" in m.body, timeout=30)
    audit = await world.rig.svc.store.recent_audit(10)
    assert ("answer", "allowed") in [(e.action, e.decision) for e in audit if e.user_id == OPERATOR]
    assert integrity(world.rig.settings.db) == "ok"


async def test_job_ending_while_the_database_is_locked_is_recorded_later(world: World) -> None:
    host = world.lab.start_host("hang", luks=False)
    host.hang_at("install")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    world.rig.db_busy_timeout = 0.2
    await world.start(nixos_anywhere_timeout=3.0)
    op, tg = world.op, world.rig.tg
    store = world.rig.svc.store
    await world.confirm_deploy(op, "clawsiecats")
    await tg.wait_for_message(
        op, lambda m: "› nixos-anywhere: Uploading" in m.body, edits=True, since=0, timeout=30
    )
    with exclusive_lock(world.rig.settings.db):
        end = await world.job_end(op)
        assert "did not finish within 3 s" in end.body
        told = await tg.wait_for_message(
            op, lambda m: "but the database is unavailable" in m.body, since=0, timeout=20
        )
        assert told.body.startswith("⚠️ Job 1 ended, but the database is unavailable")
        job = await store.job(1)
        assert job is not None
        assert job.state == "running"  # not recorded yet
        busy = await world.rig.ask(op, "/jobs", timeout=20)
        assert busy.body.startswith(UNAVAILABLE)

    async def recorded() -> bool:
        job = await store.job(1)
        return job is not None and job.state == "failed"

    await eventually(recorded, timeout=30, what="the job's end recorded")
    jobs = await world.rig.ask(op, "/jobs", timeout=20)
    assert "#1 deploy clawsiecats" in jobs.body
    assert "failed" in jobs.body
    assert integrity(world.rig.settings.db) == "ok"


async def test_full_disk_for_the_job_log_is_said_and_the_job_goes_on(world: World) -> None:
    """The log file's writes fail with ENOSPC: the log path is made to point at /dev/full,
    where the kernel answers every write with "No space left on device"."""
    host = world.lab.start_host("full", luks=False)
    host.inject_failure("install", exit_code=5, message="simulated install failure")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    jobs_dir = world.root / "state" / "jobs"
    jobs_dir.mkdir(parents=True, mode=0o700)
    (jobs_dir / "1.log").symlink_to("/dev/full")
    await world.start()
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    warned = await tg.wait_for_message(
        op, lambda m: "could not be written" in m.body, edits=True, since=0, timeout=30
    )
    assert "⚠️ the job log could not be written (No space left on device)" in warned.body
    end = await world.job_end(op)
    assert "❌ failed at nixos-anywhere (install)" in end.body
    assert "exited 5" in end.body
    await tg.wait_until(lambda: tg.documents_in(op), what="the log's tail")
    tail = tg.documents_in(op)[-1]
    assert tail.document is not None
    assert b"simulated install failure" in tail.document.data
    assert "the log file is incomplete" in (tail.caption or "")
    reply = await world.rig.ask(op, "/whoami", timeout=20)
    assert reply.body.startswith(f"You are {OPERATOR}")
    log = await world.rig.ask(op, "/log 1", timeout=20)
    assert "#1 deploy clawsiecats" in log.body
