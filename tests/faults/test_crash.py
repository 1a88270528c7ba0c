"""Crash recovery: ``deploybot run`` killed with SIGKILL mid-deploy and mid-unlock.

The bot runs as a real process against the fake Bot API and the lab. After the kill and a
fresh start: the database passes its integrity check, the job is ``interrupted``, the chat
is told where the machine stands (looked at again), what the dead process left running is
stopped, and no second install starts by itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from store import Store
from tests.botprocess import BotProcess
from tests.waiting import eventually
from tests.world import World

PASSPHRASE = "crash-proof passphrase 42"


def database_facts(db: Path) -> tuple[str, list[tuple[int, str]], int]:
    """Integrity check, (id, state) of every job, and how often a passphrase is in the file."""
    conn = sqlite3.connect(db)
    try:
        check = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        jobs = [(int(r[0]), str(r[1])) for r in conn.execute("select id, state from jobs")]
    finally:
        conn.close()
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    return check, jobs, raw.count(PASSPHRASE.encode())


async def restarted_and_told(world: World, bot: BotProcess) -> str:
    """Start the bot again; the message that says job 1 was interrupted."""
    await bot.start()
    told = await world.rig.tg.wait_for_message(
        world.op, lambda m: "was interrupted" in m.body, since=0, timeout=30
    )
    assert told.body.startswith("⏹ Job 1 (deploy clawsiecats) was interrupted")
    assert "Nothing was started again" in told.body
    return told.body


async def test_sigkill_mid_deploy(world: World, bot_process: BotProcess) -> None:
    host = world.lab.start_host("crash", luks=False)
    host.hang_at("disko")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    world.rig.write_inventory(world.inventory())
    op, tg = world.op, world.rig.tg
    await bot_process.start()
    await world.confirm_deploy(op, "clawsiecats")
    await tg.wait_for_message(op, lambda m: "Formatting" in m.body, edits=True, since=0, timeout=60)
    orphans = world.stand_ins(living=True)
    assert orphans, "nixos-anywhere should be running when the bot is killed"
    staging = world.rig.settings.state_dir / "staging" / "job-1"
    assert staging.is_dir()

    await bot_process.kill()
    # A SIGKILLed bot cannot stop its nixos-anywhere: it runs on in its own session.
    assert set(orphans) <= set(world.stand_ins(living=True))

    told = await restarted_and_told(world, bot_process)
    assert "Now: clawsiecats is still in its installer" in told
    assert "I stopped 1 processes it had left running" in told
    await eventually(
        lambda: asyncio.sleep(0, result=not world.stand_ins(living=True)), what="the orphan stopped"
    )
    assert not staging.exists(), "the staging folder (with the host's private key) was left"
    check, jobs, _ = database_facts(world.rig.settings.db)
    assert check == "ok"
    assert jobs == [(1, "interrupted")]
    listed = await world.rig.ask(op, "/jobs", timeout=20)
    assert "#1 deploy clawsiecats" in listed.body
    assert "interrupted" in listed.body
    status = await world.rig.ask(op, "/status clawsiecats", timeout=20)
    assert "state: installer" in status.body
    assert host.stage == "installer"
    assert not host.state.formatted
    assert not [e for e in host.events if "installed" in e]


async def test_sigkill_mid_unlock(world: World, bot_process: BotProcess) -> None:
    host = world.lab.start_host("crash", luks=True)
    world.machine("clawsiecats", host)
    world.rig.write_inventory(world.inventory())
    op, tg = world.op, world.rig.tg
    await bot_process.start()
    await world.confirm_deploy(op, "clawsiecats")
    await world.answer_secret(op, "New disk passphrase for clawsiecats", PASSPHRASE)
    await world.answer_secret(op, "again", PASSPHRASE)
    await tg.wait_for_message(op, lambda m: "waiting for its disk passphrase" in m.body, timeout=60)
    assert host.stage == "initrd"
    installs = [e for e in host.events if "installed" in e]
    assert len(installs) == 1

    await bot_process.kill()

    told = await restarted_and_told(world, bot_process)
    assert "Now: clawsiecats waits in its initrd (key verified): /unlock clawsiecats" in told
    check, jobs, passphrases = database_facts(world.rig.settings.db)
    assert check == "ok"
    assert jobs == [(1, "interrupted")]
    assert passphrases == 0
    logs = world.rig.settings.state_dir / "jobs"
    assert all(PASSPHRASE.encode() not in p.read_bytes() for p in logs.iterdir())
    status = await world.rig.ask(op, "/status clawsiecats", timeout=20)
    assert "state: initrd" in status.body
    assert host.stage == "initrd"
    assert host.correct_attempts == 0
    assert [e for e in host.events if "installed" in e] == installs
    assert not world.stand_ins(living=True)


async def test_sigkill_in_the_guard_window_the_machine_rolls_back(
    world: World, bot_process: BotProcess
) -> None:
    host = world.lab.start_installed_host(
        "guarded", stage="booted", luks=False, flake_attr="clawsiecats"
    )
    old = host.current_system
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats", rollback_timeout="8s")
    world.rig.write_inventory(world.inventory())
    store = await Store.open(world.rig.settings.db)
    try:
        await store.update_machine("clawsiecats", host_key=host.system_host_key or "")
    finally:
        await store.close()
    # The activation succeeds but no login reaches the new system: the guard decides.
    world.lab.set_configuration(world.flake, "clawsiecats", blocks_ssh=True)
    op, tg = world.op, world.rig.tg
    await bot_process.start()
    await tg.send_text(op, "/deploy clawsiecats")
    confirmation = await tg.wait_for_message(op, lambda m: bool(m.buttons), timeout=60)
    await tg.press_button(op, confirmation, "Update clawsiecats")
    await tg.wait_for_message(op, lambda m: "▶️ confirm" in m.body, edits=True, since=0, timeout=60)
    assert host.sshd_broken
    assert [t.name for t in host.timers] == ["deploybot-rollback-1.timer"]

    await bot_process.kill()
    # The switch back is over when the old system runs and its sshd is back.
    await host.wait_until(
        lambda: host.current_system == old and not host.sshd_broken, 30, "the guard's rollback"
    )
    assert host.current_generation == 1

    await bot_process.start()
    told = await tg.wait_for_message(op, lambda m: "was interrupted" in m.body, since=0, timeout=30)
    assert told.body.startswith("⏹ Job 1 (update clawsiecats) was interrupted")
    assert "its rollback guard switches the machine back" in told.body
    check, jobs, _ = database_facts(world.rig.settings.db)
    assert check == "ok"
    assert jobs == [(1, "interrupted")]
