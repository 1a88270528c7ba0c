"""Reboot tests and schedules end to end: scheduled and on demand, auto and prompted unlock,
a stalled test, and schedules that survive a restart without doubling.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.flows.watch.schedule import Schedules, reboot_test_id
from tests.fake_telegram import FakeMessage
from tests.world import AUTO_PASSPHRASE, LUKS_SECRET, World

FAST: dict[str, Any] = {"alert_after": 2, "alert_batch": 0.3, "unlock_settle": 1.0}
WEEKLY = "0 4 * * 0"


def schedules(world: World) -> Schedules:
    found = world.rig.svc.engine.schedules
    assert isinstance(found, Schedules)
    return found


def run_scheduled_now(world: World, machine: str) -> None:
    """Move the scheduled reboot test's next run to now: the scheduler itself starts it."""
    assert world.rig.app is not None
    assert world.rig.app.job_queue is not None
    (job,) = world.rig.app.job_queue.get_jobs_by_name(reboot_test_id(machine))
    job.job.modify(next_run_time=datetime.now(UTC))


def passed(name: str) -> Any:
    return lambda m: f"Reboot test of {name} passed" in m.body


def stage_times(report: FakeMessage) -> set[str]:
    line = report.body.splitlines()[1]
    return {part.split()[0] for part in line.split(" · ")}


async def test_scheduled_reboot_test_with_auto_unlock(world: World) -> None:
    host = world.lab.start_installed_host("luks", stage="booted", luks_passphrase=AUTO_PASSPHRASE)
    world.machine(
        "vault",
        host,
        auto_unlock=True,
        luks_passphrase_secret=LUKS_SECRET,
        reboot_check=WEEKLY,
        probe_interval="300ms",
    )
    await world.start(**FAST)
    await world.pin("vault", host)
    before = host.boot_id
    run_scheduled_now(world, "vault")
    op, tg = world.op, world.rig.tg
    report = await tg.wait_for_message(op, passed("vault"), timeout=60)
    print(tg.transcript(op))
    assert stage_times(report) == {"reboot", "down", "initrd", "unlock", "boot", "health"}
    assert "scheduled" in report.body
    assert host.stage == "booted"
    assert host.boot_id != before
    assert host.correct_attempts == 1
    assert not [m for m in tg.bot_messages(op) if "🚨" in m.body or "unexpectedly" in m.body]
    status = await world.rig.ask(op, "/status vault", timeout=15)
    assert "last reboot test" in status.body
    assert "passed" in status.body


async def test_scheduled_reboot_test_with_prompted_unlock(world: World) -> None:
    host = world.lab.start_installed_host("luks", stage="booted")
    world.machine("vault", host, reboot_check=WEEKLY, probe_interval="300ms")
    await world.start(**FAST)
    await world.pin("vault", host)
    run_scheduled_now(world, "vault")
    op, tg = world.op, world.rig.tg
    answer = await world.answer_secret(
        op, "waiting for its disk passphrase", host.luks_passphrase or ""
    )
    report = await tg.wait_for_message(op, passed("vault"), timeout=60)
    assert "unlock" in stage_times(report)
    assert tg.is_deleted(op, answer.message_id)
    assert host.stage == "booted"
    assert not [m for m in tg.bot_messages(op) if "🚨" in m.body or "unexpectedly" in m.body]


async def test_stalled_reboot_test_on_demand(world: World) -> None:
    host = world.lab.start_installed_host("plain", stage="booted", luks=False)
    world.machine("web", host, luks=False, boot_timeout="1500ms", probe_interval="300ms")
    await world.start(**FAST)
    await world.pin("web", host, initrd=False)
    host.down_delay = 120.0
    op, tg = world.op, world.rig.tg
    ask = await world.rig.ask(op, "/reboot web")
    assert "Reboot web now" in ask.body
    await tg.press_button(op, ask, "Reboot")
    report = await tg.wait_for_message(op, lambda m: "stalled at boot" in m.body, timeout=60)
    assert "Reboot test of web" in report.body
    assert "reboot" in report.body
    assert host.stage == "down"
    status = await world.rig.ask(op, "/status web", timeout=15)
    assert "stalled at boot" in status.body


async def test_reboot_can_be_cancelled(world: World) -> None:
    host = world.lab.start_installed_host("plain", stage="booted", luks=False)
    world.machine("web", host, luks=False)
    await world.start(**FAST)
    await world.pin("web", host, initrd=False)
    before = host.boot_id
    op, tg = world.op, world.rig.tg
    ask = await world.rig.ask(op, "/reboot web")
    await tg.press_button(op, ask, "Cancel")
    await tg.wait_for_message(op, lambda m: "Reboot of web cancelled" in m.body)
    assert host.boot_id == before


async def test_restart_keeps_schedules(world: World) -> None:
    host = world.lab.start_installed_host("plain", stage="booted", luks=False)
    world.machine("web", host, luks=False, reboot_check=WEEKLY, probe_interval="10m")
    world.machine("db", host, luks=False, ssh_port=1, probe_interval="1h")
    await world.start(**FAST)
    op = world.op
    first = await world.rig.ask(op, "/schedule")
    lines = first.body.splitlines()
    assert lines[0] == "Schedules (4):"
    assert any(
        line.startswith("• weekly report to the admins (0 8 * * 1) — next ") for line in lines
    )
    assert any(line.startswith("• probe web (every 10 min 00 s) — next ") for line in lines)
    assert any(line.startswith("• reboot test web (cron 0 4 * * 0) — next ") for line in lines)
    assert any(line.startswith("• probe db") for line in lines)
    reboot_line = next(line for line in lines if "reboot test" in line)
    schedules(world).start()
    assert len(schedules(world).entries()) == 3
    await world.rig.restart()
    again = await world.rig.ask(op, "/schedule")
    assert again.body.splitlines()[0] == "Schedules (4):"
    assert reboot_line in again.body.splitlines()
    assert world.rig.app is not None
    assert world.rig.app.job_queue is not None
    names = sorted(str(job.name) for job in world.rig.app.job_queue.jobs())
    assert names == ["probe:db", "probe:web", "prune history", "reboot-test:web", "report:weekly"]


async def test_scheduled_reboot_test_of_a_machine_not_installed_yet_is_skipped(
    world: World,
) -> None:
    host = world.lab.start_host("fresh")
    world.machine("fresh", host, reboot_check=WEEKLY, probe_interval="1h")
    await world.start(**FAST)
    run_scheduled_now(world, "fresh")
    op, tg = world.op, world.rig.tg
    skipped = await tg.wait_for_message(op, lambda m: "skipped" in m.body, timeout=20)
    assert "⏭ Scheduled reboot test of fresh skipped: not installed yet." in skipped.body
    assert not [m for m in tg.bot_messages(op) if "stalled at" in m.body]
    assert await world.rig.svc.store.recent_jobs(machines={"fresh"}) == []
    assert host.stage == "installer"


async def test_health_waits_for_systemd_to_finish_the_boot(world: World) -> None:
    """SSH answers while units still start (a real guest said "starting" for over a minute):
    the reboot test judges health once the boot is over, not at its first look."""
    host = world.lab.start_installed_host("plain", stage="booted", luks=False)
    world.machine("web", host, luks=False, boot_timeout="60s", probe_interval="1h")
    await world.start(**FAST)
    await world.pin("web", host, initrd=False)
    host.set_starting_for(3.0)
    op, tg = world.op, world.rig.tg
    ask = await world.rig.ask(op, "/reboot web")
    await tg.press_button(op, ask, "Reboot")
    report = await tg.wait_for_message(op, lambda m: "Reboot test of web" in m.body, timeout=60)
    print(tg.transcript(op))
    assert "passed" in report.body, report.body
    assert "system running" in report.body
