"""Reloading: SIGHUP to a running ``deploybot run`` process, and ``/reload`` in the chat.

A good inventory takes effect at once (machines added and removed, their schedules, a job
under way untouched); a wrong one is refused, the old one stays and the admins are told the
machine and the key. Only the admins may ``/reload``; settings that need a restart say so.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

from tests.botprocess import BotProcess
from tests.botrig import BotRig
from tests.people import ADMIN, OPERATOR
from tests.world import World


def spare(name: str, *, cron: str = "") -> str:
    """A machine nobody installs (a closed port of its own): only listed and scheduled."""
    check = f'reboot_check = "{cron}"\n' if cron else ""
    port = 1 + sum(name.encode()) % 1000
    return f'[machines.{name}]\nhost = "127.0.0.1"\nssh_port = {port}\n' + (
        f"operators = [{OPERATOR}]\n{check}"
    )


def audit_rows(db: Path) -> list[tuple[object, str, str, str]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "select user_id, username, decision, detail from audit where action = 'reload'"
        ).fetchall()
    finally:
        conn.close()
    return [(r[0], str(r[1]), str(r[2]), str(r[3])) for r in rows]


async def test_sighup_with_a_good_then_a_wrong_inventory(
    world: World, bot_process: BotProcess
) -> None:
    host = world.lab.start_host("reload", luks=False)
    host.hang_at("disko")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    rig, tg, admin, op = world.rig, world.rig.tg, world.admin, world.op
    rig.write_inventory(world.inventory() + spare("old", cron="0 4 * * 0"))
    await bot_process.start()
    await world.confirm_deploy(op, "clawsiecats")
    await tg.wait_for_message(op, lambda m: "Formatting" in m.body, edits=True, since=0, timeout=60)
    before = await rig.ask(admin, "/schedule", timeout=20)
    assert "old" in before.body

    # A good inventory: "old" leaves, "fresh" arrives with a reboot test.
    rig.write_inventory(world.inventory() + spare("fresh", cron="30 3 * * 1"))
    mark = tg.mark()
    bot_process.send(signal.SIGHUP)
    told = await tg.wait_for_message(
        admin, lambda m: m.body.startswith("🔄 Reload by signal"), since=mark, timeout=20
    )
    assert "machines added: fresh" in told.body
    assert "machines removed: old" in told.body
    listed = await rig.ask(admin, "/machines", timeout=20)
    assert "fresh — 127.0.0.1" in listed.body
    assert "old" not in listed.body
    assert "clawsiecats" in listed.body
    schedule = await rig.ask(admin, "/schedule", timeout=20)
    fresh = [line for line in schedule.body.splitlines() if "fresh" in line]
    assert len(fresh) == 2, schedule.body  # its probe and its reboot test
    assert any("30 3 * * 1" in line for line in fresh), schedule.body
    assert "old" not in schedule.body
    gone = await rig.ask(admin, "/status old", timeout=20)
    assert "Unknown machine" in gone.body
    # The deploy that was running goes on in this process: it is still there to cancel.
    jobs = await rig.ask(op, "/jobs", timeout=20)
    assert "#1 deploy clawsiecats" in jobs.body
    assert "running" in jobs.body
    assert world.stand_ins(living=True), "the reload stopped the running install"

    # A wrong inventory: refused, the admins learn the machine and the key, nothing changes.
    rig.write_inventory(
        world.inventory() + spare("fresh") + spare("broken") + 'probe_interval = "5x"\n'
    )
    mark = tg.mark()
    bot_process.send(signal.SIGHUP)
    refused = await tg.wait_for_message(
        admin, lambda m: "refused" in m.body, since=mark, timeout=20
    )
    assert refused.body.startswith("⚠️ Reload by signal refused.")
    assert "broken: probe_interval: bad duration '5x'" in refused.body
    listed = await rig.ask(admin, "/machines", timeout=20)
    assert "fresh — 127.0.0.1" in listed.body
    assert "broken" not in listed.body
    schedule = await rig.ask(admin, "/schedule", timeout=20)
    assert any("30 3 * * 1" in line for line in schedule.body.splitlines()), schedule.body

    audit = await rig.ask(admin, "/audit", timeout=20)
    refusal = " signal reload: refused (broken: probe_interval: bad duration '5x'"
    assert any(refusal in line for line in audit.body.splitlines()), audit.body
    cancelled = await rig.ask(op, "/cancel 1", timeout=20)
    assert cancelled.body == "Job 1 cancelled; its processes were stopped."
    # SIGTERM still stops the bot cleanly: the SIGHUP handler left PTB's stop signals alone.
    assert await bot_process.stop() == 0
    rows = audit_rows(rig.settings.db)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (None, "signal", "allowed"),
        (None, "signal", "refused"),
    ]
    assert "machines added: fresh" in rows[0][3]
    assert "broken: probe_interval" in rows[1][3]


async def test_reload_by_an_admin_and_refused_for_an_operator(rig: BotRig) -> None:
    await rig.start(spare("web"))
    tg, admin, op = rig.tg, rig.tg.user(ADMIN, "ada"), rig.tg.user(OPERATOR, "opal")
    refused = await rig.ask(op, "/reload")
    assert refused.body == "/reload is for admins only."

    rig.write_inventory(spare("web") + spare("db"))
    done = await rig.ask(admin, "/reload")
    assert done.body.splitlines()[0].startswith("Reloaded ")
    assert "machines added: db" in done.body
    mine = await rig.ask(op, "/machines")
    assert "db — 127.0.0.1" in mine.body
    schedules = rig.svc.engine.schedules
    assert schedules is not None
    before = {e.id: e.next_run for e in schedules.entries()}
    rig.write_inventory(spare("web") + spare("db") + 'probe_interval = "5m"\n')
    changed = await rig.ask(admin, "/reload")
    assert "machines changed: db" in changed.body
    after = {e.id: e for e in schedules.entries()}
    assert after["probe:db"].every == "every 5 min 00 s"
    # An unchanged machine's schedule is left alone: its next probe has not moved.
    assert after["probe:web"].next_run == before["probe:web"]

    audit = await rig.ask(admin, "/audit")
    lines = audit.body.splitlines()
    assert any(f"{ADMIN} @ada /reload: allowed" in line for line in lines), audit.body
    assert any(f"{ADMIN} @ada reload: allowed (machines added: db)" in line for line in lines)
    assert any(f"{OPERATOR} @opal /reload: refused (needs admin right)" in line for line in lines)
    assert not [m for m in tg.bot_messages(op) if "Reload" in m.body]


async def test_admins_change_on_reload_other_settings_need_a_restart(rig: BotRig) -> None:
    await rig.start(spare("web"))
    admin, op = rig.tg.user(ADMIN, "ada"), rig.tg.user(OPERATOR, "opal")
    rig.env["DEPLOYBOT_ADMINS"] = f"{ADMIN},{OPERATOR}"
    rig.env["DEPLOYBOT_FLAKE"] = "github:someone/else"
    done = await rig.ask(admin, "/reload")
    assert f"admins: {OPERATOR}, {ADMIN}" in done.body
    assert "needs a restart (the old value stays until then): DEPLOYBOT_FLAKE" in done.body
    assert rig.svc.engine.deployer.settings.flake == "."
    whoami = await rig.ask(op, "/whoami")
    assert whoami.body.endswith("admin (every machine).")


async def test_a_wrong_reload_tells_the_other_admins(rig: BotRig) -> None:
    rig.env["DEPLOYBOT_ADMINS"] = f"{ADMIN},{OPERATOR}"
    await rig.start(spare("web"))
    tg, admin, other = rig.tg, rig.tg.user(ADMIN, "ada"), rig.tg.user(OPERATOR, "opal")
    rig.write_inventory(spare("web") + "colour = 1\n")
    answer = await rig.ask(admin, "/reload")
    assert answer.body.startswith("Reload refused: ")
    assert "web: colour: unknown key" in answer.body, answer.body
    told = await tg.wait_for_message(other, lambda m: "refused" in m.body, since=0)
    assert told.body.startswith("⚠️ Reload by @ada refused.")
    assert "web: colour" in told.body
    assert rig.svc.inventory.get("web") is not None
