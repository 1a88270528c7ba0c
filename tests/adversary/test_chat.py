"""Attacks from the chat side: strangers flooding a group, hostile display names, operator
data asked for in a group, a passphrase that looks like a command."""

from __future__ import annotations

import re
from typing import Any

from tests.botrig import BotRig, audit_of
from tests.faults.storage import exclusive_lock
from tests.lab.host import LabHost
from tests.people import ADMIN, OPERATOR, STRANGER
from tests.waiting import eventually
from tests.world import World

PROMPT = "waiting for its disk passphrase"
INVENTORY = f"""
[machines.web]
host = "127.0.0.1"
ssh_port = 1
operators = [{OPERATOR}]
"""


def refusals(detail: str) -> int:
    """How many refusals one audit line counts."""
    found = re.search(r"(\d+) refusals?", detail)
    return int(found.group(1)) if found else 1


async def _in_initrd(world: World, **options: Any) -> LabHost:
    host = world.lab.start_installed_host("luks", **options)
    world.machine("clawsiecats", host)
    await world.start(unlock_settle=2.0)
    await world.pin("clawsiecats", host)
    return host


async def test_strangers_flooding_a_group_do_not_hold_up_a_passphrase(world: World) -> None:
    host = await _in_initrd(world)
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/unlock clawsiecats")
    await tg.wait_for_message(op, lambda m: PROMPT in m.body, timeout=20)
    group = tg.group(-100_777, "lobby")
    for n in range(60):
        await tg.send_text(tg.user(700_000 + n, f"x{n}"), f"/status clawsiecats {n}", chat=group)
    mark = tg.request_mark()
    answer = await tg.send_text(op, host.luks_passphrase or "")
    # Deleted and relayed well inside the rate limiter's 20-a-minute window for the group.
    await tg.wait_until(lambda: tg.is_deleted(op, answer.message_id), timeout=10)
    await host.wait_until(lambda: host.correct_attempts == 1, timeout=15, what="the relay")
    # Strangers in a group get no answer at all, and the bot leaves a group with no admin,
    # after the passphrase that came with them was deleted.
    await tg.wait_until(lambda: tg.has_left(group), timeout=20, what="leaving the group")
    assert tg.bot_messages(group) == []
    asked = [r.method for r in tg.calls(since=mark)]
    assert asked.index("deleteMessage") < asked.index("getChatMember"), asked

    async def strangers() -> list[Any]:
        entries = await world.rig.svc.store.recent_audit(200)
        found = [e for e in entries if e.user_id is not None and e.user_id >= 700_000]
        return found if sum(refusals(e.detail) for e in found) == 60 else []

    lines = await eventually(strangers, what="all 60 refusals audited")
    assert len(lines) <= 6, [e.detail for e in lines]


async def test_a_stranger_is_refused_while_the_bot_is_still_busy(rig: BotRig) -> None:
    """Strangers are turned away at the door, not queued behind the bot's own work: here
    an operator's command whose audit waits for a database another program holds."""
    rig.db_busy_timeout = 60.0
    await rig.start(INVENTORY)
    tg = rig.tg
    op = tg.user(OPERATOR, "opal")
    with exclusive_lock(rig.settings.db):
        mark = tg.mark()
        await tg.send_text(op, "/whoami")
        refusal = await rig.ask(tg.user(STRANGER, "eve"), "/machines")
        assert refusal.body.startswith(f"Not authorised. Your Telegram user id is {STRANGER}")
        assert [m for m in tg.bot_messages(op) if m.seq > mark] == []
    reply = await tg.wait_for_message(op, since=mark, timeout=20)
    assert reply.body.startswith(f"You are {OPERATOR}")
    assert await audit_of(rig, STRANGER, 1) == [("/machines", "", "refused")]


async def test_updates_refused_at_the_door_are_confirmed(rig: BotRig) -> None:
    """A batch that ends with strangers is confirmed all the same: fetched once, each
    refusal counted once."""
    await rig.start(INVENTORY)
    tg = rig.tg
    await rig.ask(tg.user(OPERATOR, "opal"), "/whoami")
    delivered = tg.state.delivered_update_count
    group = tg.group(-100_780, "lobby")
    for _ in range(5):
        await tg.send_text(tg.user(720_000, "z"), "/status web", chat=group)
    await tg.wait_until(lambda: not tg.state.updates, what="the strangers' updates confirmed")
    assert tg.state.delivered_update_count == delivered + 5

    async def counted() -> str:
        found = [e for e in await rig.svc.store.recent_audit(20) if e.user_id == 720_000]
        return found[0].detail if found and "5 refusals" in found[0].detail else ""

    detail = await eventually(counted, what="five refusals on one line")
    assert detail.endswith(": /status web"), detail


async def test_the_bot_stays_in_a_group_an_admin_belongs_to(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    tg = rig.tg
    admin = tg.user(ADMIN, "ada")
    group = tg.group(-100_778, "ops", members=[admin])
    await tg.send_text(tg.user(700_100, "eve"), "/machines", chat=group)
    await tg.wait_for_request("getChatMember", timeout=10)
    reply = await rig.ask(admin, "/whoami")  # the background look has had its turn
    assert reply.body.startswith(f"You are {ADMIN}")
    assert not tg.has_left(group)
    assert tg.bot_messages(group) == []


async def test_an_admin_added_by_a_reload_keeps_the_bot_in_their_group(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    tg = rig.tg
    newcomer = tg.user(730_001, "nia")
    group = tg.group(-100_780, "nia's", members=[newcomer])
    rig.env["DEPLOYBOT_ADMINS"] = f"{ADMIN},{newcomer.id}"
    done = await rig.ask(tg.user(ADMIN, "ada"), "/reload")
    assert done.body.startswith("Reloaded "), done.body
    await tg.send_text(tg.user(700_101, "eve"), "/machines", chat=group)
    await tg.wait_for_request("getChatMember", timeout=10)
    reply = await rig.ask(newcomer, "/whoami")  # the background look has had its turn
    assert reply.body.startswith("You are 730001")
    assert not tg.has_left(group)


async def test_a_flood_of_strangers_keeps_real_entries_in_the_last_20(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    tg = rig.tg
    op = tg.user(OPERATOR, "opal")
    await rig.ask(op, "/whoami")
    for n in range(40):
        stranger = tg.user(710_000 + n, first_name="\u202eKO lla\u202c <b>admin</b>\nfake line")
        for _ in range(3):
            await tg.send_text(stranger, "/machines")

    async def settled() -> list[Any]:
        entries = await rig.svc.store.recent_audit(300)
        counted = sum(
            refusals(e.detail) for e in entries if e.user_id is not None and e.user_id >= 710_000
        )
        return entries if counted == 120 else []

    await eventually(settled, what="every refusal counted")
    last20 = await rig.svc.store.recent_audit(20)
    assert any(e.user_id == OPERATOR and e.action == "/whoami" for e in last20)
    admin = tg.user(ADMIN, "ada")
    shown = await rig.ask(admin, "/audit")
    for hostile in ("\u202e", "<b>", "fake line"):
        assert hostile not in shown.body


async def test_a_display_name_is_never_stored(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    tg = rig.tg
    op = tg.user(OPERATOR, first_name="\u202eevil\u202c <i>x</i>")  # no username
    await rig.ask(op, "/whoami")
    entries = await rig.svc.store.recent_audit(5)
    assert [e.username for e in entries if e.user_id == OPERATOR] == [""]


async def test_operator_data_is_answered_only_in_private_chats(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    tg = rig.tg
    op = tg.user(OPERATOR, "opal")
    group = tg.group(-100_779, "ops", members=[op])
    for command in ("/status web", "/machines", "/log 1"):
        reply = await rig.ask(op, command, chat=group)
        name = command.split()[0]
        assert (
            reply.body == f"{name} works only in our private chat: here every member would see it."
        )
    admin = tg.user(ADMIN, "ada")
    reply = await rig.ask(admin, "/audit", chat=group)
    assert reply.body.startswith("/audit works only in our private chat")
    assert "web" not in "".join(m.body for m in tg.bot_messages(group))


async def test_a_passphrase_that_starts_with_a_slash_is_an_answer(world: World) -> None:
    host = await _in_initrd(world, luks_passphrase="/tr0ub4dor&3 horse")
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/unlock clawsiecats")
    await tg.wait_for_message(op, lambda m: PROMPT in m.body, timeout=20)
    answer = await tg.send_text(op, "/tr0ub4dor&3 horse")
    await tg.wait_until(lambda: tg.is_deleted(op, answer.message_id), timeout=10)
    await tg.wait_for_message(op, lambda m: "🔓 clawsiecats unlocked" in m.body, timeout=30)
    assert host.correct_attempts == 1
    assert not any("tr0ub4dor" in m.body for m in tg.bot_messages(op))
    assert not any("Unknown command" in m.body for m in tg.bot_messages(op))


async def test_log_with_a_30_digit_job_id_is_one_clear_answer(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    reply = await rig.ask(rig.tg.user(OPERATOR, "opal"), "/log " + "9" * 30)
    assert reply.body == "Usage: /log <job> — a job number from /jobs."
