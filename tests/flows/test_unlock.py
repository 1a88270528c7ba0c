"""Unlocking LUKS machines from the chat, end to end: the real bot over the fake Bot API,
relaying to lab hosts whose initrds check the answer against a real LUKS2 header.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bot.config.inventory import Machine
from bot.core.keys import fingerprint
from bot.flows.unlock import UnlockResult
from store.records import AuditEntry
from tests.fake_telegram import FakeMessage, FakeUser
from tests.lab import keys
from tests.lab.host import LabHost
from tests.people import OTHER_OPERATOR, STRANGER
from tests.waiting import eventually
from tests.world import AUTO_PASSPHRASE, LUKS_SECRET, World

WRONG = "not the passphrase"
PROMPT = "waiting for its disk passphrase"
FAST: dict[str, Any] = {"unlock_settle": 2.0}


def _is_prompt(message: FakeMessage) -> bool:
    return PROMPT in message.body


def _says(text: str) -> Callable[[FakeMessage], bool]:
    return lambda message: text in message.body


def _forces_reply(message: FakeMessage) -> bool:
    return bool((message.reply_markup or {}).get("force_reply"))


def _machine(world: World, name: str = "clawsiecats") -> Machine:
    machine = world.rig.svc.inventory.get(name)
    assert machine is not None
    return machine


async def _unlock_audit(world: World) -> list[AuditEntry]:
    entries = await world.rig.svc.store.recent_audit(limit=200)
    return sorted((e for e in entries if e.action in ("unlock", "auto-unlock")), key=lambda e: e.id)


async def _start(world: World) -> None:
    """Start the bot once the operator and the admin have opened their private chats."""
    for user in (world.op, world.admin):
        assert world.rig.tg.bot_messages(user) == []
    await world.start(**FAST)


async def _in_initrd(world: World, flavour: str = "askpass", **inventory: Any) -> LabHost:
    """An installed host waiting in its initrd, known to the running bot with pinned keys."""
    host = world.lab.start_installed_host("luks", initrd=flavour)
    world.machine("clawsiecats", host, **inventory)
    await _start(world)
    await world.pin("clawsiecats", host)
    return host


async def _ask_unlock(world: World, user: FakeUser) -> FakeMessage:
    tg = world.rig.tg
    await tg.send_text(user, "/unlock clawsiecats")
    return await tg.wait_for_message(user, _is_prompt)


async def _true(value: bool) -> bool:
    return value


def _background(coro: Any) -> asyncio.Task[UnlockResult]:
    return asyncio.ensure_future(coro)


@pytest.mark.parametrize("flavour", ["askpass", "systemd"])
async def test_wrong_then_right_passphrase_unlocks_and_boots(world: World, flavour: str) -> None:
    host = world.lab.start_installed_host("luks", initrd=flavour)
    # One flavour pins the initrd key at deploy (the store), the other in the inventory.
    pin_in_inventory = flavour == "systemd"
    extra = {"initrd_host_key": host.initrd_host_key} if pin_in_inventory else {}
    world.machine("clawsiecats", host, **extra)
    await _start(world)
    await world.pin("clawsiecats", host, initrd=not pin_in_inventory)
    op, tg = world.op, world.rig.tg

    prompt = await _ask_unlock(world, op)
    assert f"initrd key {fingerprint(host.initrd_host_key or '')} verified" in prompt.body
    assert _forces_reply(prompt)
    wrong = await tg.send_text(op, WRONG)
    again = await tg.wait_for_message(op, lambda m: "attempt 2 of 3" in m.body, timeout=20)
    assert again.body.startswith("❌ wrong passphrase, attempt 2 of 3.")
    assert _forces_reply(again)
    assert tg.is_deleted(op, wrong.message_id)
    right = await tg.send_text(op, host.luks_passphrase or "", reply_to=again)
    done = await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=30)

    assert done.body.startswith("🔓 clawsiecats unlocked by @opal, up after ")
    assert tg.is_deleted(op, right.message_id)
    assert (
        tg.message(op, prompt.message_id).body == "🔐 clawsiecats: passphrase received and deleted."
    )
    assert [(a.correct, a.via) for a in host.attempts] == [(False, flavour), (True, flavour)]
    assert host.stage == "booted"
    assert (await world.rig.svc.store.machine("clawsiecats")).state == "up"
    # The admin hears how it ended too.
    await tg.wait_for_message(world.admin, lambda m: "unlocked by @opal" in m.body)
    audit = [(e.user_id, e.username, e.decision) for e in await _unlock_audit(world)]
    assert audit == [(op.id, "opal", "wrong"), (op.id, "opal", "accepted"), (op.id, "opal", "up")]


@pytest.mark.parametrize("flavour", ["askpass", "systemd"])
async def test_two_operators_answer_at_once_first_wins(world: World, flavour: str) -> None:
    host = await _in_initrd(world, flavour, operators=[world.op.id, OTHER_OPERATOR])
    tg = world.rig.tg
    op, otto, admin = world.op, tg.user(OTHER_OPERATOR, "otto"), world.admin
    session = _background(
        world.rig.engine.unlocker.unlock(_machine(world), trigger="health watcher")
    )
    prompts = {u.id: await tg.wait_for_message(u, _is_prompt) for u in (op, otto, admin)}
    first = await tg.send_text(op, host.luks_passphrase or "")
    second = await tg.send_text(otto, host.luks_passphrase or "")

    result = await asyncio.wait_for(session, 30)
    assert result.ok, result.summary
    assert [a.correct for a in host.attempts] == [True], "one answer reached the initrd"
    await tg.wait_until(
        lambda: tg.is_deleted(op, first.message_id) and tg.is_deleted(otto, second.message_id)
    )
    late = await tg.wait_for_message(otto, lambda m: "already answered" in m.body)
    assert late.body == "@opal already answered for clawsiecats; I deleted your message."
    for user in (otto, admin):
        edited = tg.message(user, prompts[user.id].message_id)
        assert edited.body == "🔐 clawsiecats: @opal is unlocking it."
        await tg.wait_for_message(user, lambda m: "unlocked by @opal" in m.body, since=0)
    assert host.stage == "booted"


@pytest.mark.parametrize("flavour", ["askpass", "systemd"])
async def test_passphrase_in_a_group_is_deleted_and_refused(world: World, flavour: str) -> None:
    host = await _in_initrd(world, flavour)
    op, tg = world.op, world.rig.tg
    group = tg.group(-100, "ops")
    await _ask_unlock(world, op)
    leaked = await tg.send_text(op, host.luks_passphrase or "", chat=group)
    refusal = await tg.wait_for_message(group, lambda m: "group chat" in m.body)
    assert refusal.body == (
        "A passphrase is never accepted in a group chat. I deleted it; "
        "answer me in our private chat."
    )
    assert tg.is_deleted(group, leaked.message_id)
    assert host.attempts == []
    # The private prompt is still open and takes the answer.
    await tg.send_text(op, host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=30)
    assert [a.correct for a in host.attempts] == [True]


async def test_strangers_and_other_operators_cannot_unlock(world: World) -> None:
    host = world.lab.start_installed_host("luks")
    world.machine("clawsiecats", host)
    world.machines["spare"] = (
        f'[machines.spare]\nhost = "127.0.0.254"\nluks = false\noperators = [{OTHER_OPERATOR}]\n'
    )
    await _start(world)
    await world.pin("clawsiecats", host)
    tg, op = world.rig.tg, world.op
    stranger, otto = tg.user(STRANGER, "mallory"), tg.user(OTHER_OPERATOR, "otto")

    refused = await world.rig.ask(stranger, "/unlock clawsiecats")
    assert refused.body.startswith("Not authorised.")
    other = await world.rig.ask(otto, "/unlock clawsiecats")
    assert other.body == "You may not act on 'clawsiecats': it is unknown or not one of yours."
    # While the operator's prompt is open, a stranger's text reaches nothing.
    await _ask_unlock(world, op)
    await tg.send_text(stranger, host.luks_passphrase or "")
    await tg.send_text(otto, host.luks_passphrase or "")
    await tg.wait_until(lambda: tg.pending_updates == 0)
    await tg.send_text(op, host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=30)
    assert [a.correct for a in host.attempts] == [True]
    assert not [m for m in tg.bot_messages(stranger) + tg.bot_messages(otto) if _is_prompt(m)]
    gate = await world.rig.svc.store.recent_audit(limit=200)
    refusals = {(e.user_id, e.action) for e in gate if e.decision == "refused"}
    assert {(STRANGER, "/unlock"), (OTHER_OPERATOR, "/unlock")} <= refusals


@pytest.mark.parametrize("pin", ["mismatch", "none"])
async def test_no_passphrase_without_the_pinned_initrd_key(world: World, pin: str) -> None:
    host = world.lab.start_installed_host("luks")
    world.machine("clawsiecats", host)
    await _start(world)
    impostor = keys.generate_ed25519(world.root / "impostor" / "key", "impostor")
    pinned = impostor if pin == "mismatch" else ""
    await world.rig.svc.store.update_machine(
        "clawsiecats", host_key=host.system_host_key or "", initrd_host_key=pinned
    )
    op, admin, tg = world.op, world.admin, world.rig.tg
    await tg.send_text(op, "/unlock clawsiecats")
    alert = await tg.wait_for_message(op, lambda m: m.body.startswith("🚨"))
    assert "The passphrase was NOT sent." in alert.body
    if pin == "mismatch":
        assert "initrd host key mismatch" in alert.body
        assert f"pinned:    {fingerprint(impostor)} (recorded at deploy)" in alert.body
        assert f"presented: {fingerprint(host.initrd_host_key or '')}" in alert.body
    else:
        assert "no pinned initrd host key" in alert.body
        assert "Set initrd_host_key in the inventory" in alert.body
    await tg.wait_for_message(admin, lambda m: m.body == alert.body, since=0)
    assert not [m for m in tg.bot_messages(op) if _is_prompt(m)]
    assert host.attempts == []
    assert host.stage == "initrd"
    audit = await _unlock_audit(world)
    assert [e.decision for e in audit] == ["refused"]


async def test_prompt_expires_is_sent_again_and_then_answered(world: World) -> None:
    host = await _in_initrd(world, unlock_timeout="1s")
    op, tg = world.op, world.rig.tg
    first = await _ask_unlock(world, op)
    second = await tg.wait_for_message(op, lambda m: "asking again" in m.body, timeout=10)
    assert second.body.startswith("(asking again: nobody answered)\n🔐 clawsiecats is waiting")
    assert tg.message(op, first.message_id).body == "⌛ The prompt to unlock clawsiecats expired."
    await tg.send_text(op, host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=30)
    assert [a.correct for a in host.attempts] == [True]


async def test_nobody_answering_after_a_reboot_is_an_alert(world: World) -> None:
    host = world.lab.start_installed_host("luks", stage="booted")
    world.machine("clawsiecats", host, unlock_timeout="1s")
    await _start(world)
    await world.pin("clawsiecats", host)
    op, admin, tg = world.op, world.admin, world.rig.tg
    host.reboot()
    result = await world.rig.engine.unlocker.follow_boot(_machine(world), trigger="reboot test")
    assert not result.ok
    for user in (op, admin):
        prompts = [m for m in tg.bot_messages(user) if "The prompt to unlock" in m.body]
        assert len(prompts) == 2, tg.transcript(user)
        alert = await tg.wait_for_message(user, lambda m: "nobody unlocked" in m.body, since=0)
        assert alert.body == (
            "🚨 nobody unlocked clawsiecats within 2.0 s; it still waits in its initrd"
        )
    late = await tg.send_text(op, host.luks_passphrase or "")
    note = await tg.wait_for_message(op)
    assert note.body == "That prompt for clawsiecats expired; I deleted your message."
    assert tg.is_deleted(op, late.message_id)
    assert host.attempts == []
    assert [e.decision for e in await _unlock_audit(world)] == ["expired"]


@pytest.mark.parametrize("flavour", ["askpass", "systemd"])
async def test_auto_unlock_after_a_reboot_tells_the_operators(world: World, flavour: str) -> None:
    host = world.lab.start_installed_host(
        "luks", stage="booted", luks_passphrase=AUTO_PASSPHRASE, initrd=flavour
    )
    world.machine("clawsiecats", host, auto_unlock=True, luks_passphrase_secret=LUKS_SECRET)
    await _start(world)
    await world.pin("clawsiecats", host)
    tg = world.rig.tg
    host.reboot()
    result = await world.rig.engine.unlocker.follow_boot(_machine(world), trigger="reboot test")
    assert result.ok, result.summary
    assert host.stage == "booted"
    assert [a.correct for a in host.attempts] == [True]
    verified = fingerprint(host.initrd_host_key or "")
    for user in (world.op, world.admin):
        told = await tg.wait_for_message(user, lambda m: "auto-unlocked" in m.body, since=0)
        assert told.body.startswith(
            f"🔓 clawsiecats auto-unlocked (reboot test; initrd key {verified} verified), up after"
        )
        assert not [m for m in tg.bot_messages(user) if _is_prompt(m)]
    audit = await _unlock_audit(world)
    assert [(e.action, e.user_id, e.decision) for e in audit] == [("auto-unlock", None, "accepted")]


@pytest.mark.parametrize("flavour", ["askpass", "systemd"])
async def test_initrd_vanishing_mid_relay_is_reported_and_recoverable(
    world: World, flavour: str
) -> None:
    host = await _in_initrd(world, flavour)
    op, tg = world.op, world.rig.tg
    await _ask_unlock(world, op)
    # The bot logged in to the initrd before prompting; now that connection dies.
    host.vanish_initrd()
    answer = await tg.send_text(op, host.luks_passphrase or "")
    told = await tg.wait_for_message(op, lambda m: "NOT sent" in m.body, timeout=20)
    assert told.body.startswith("⚠️ clawsiecats: the initrd went away before it took the passphrase")
    assert "/unlock clawsiecats once its initrd answers again." in told.body
    assert tg.is_deleted(op, answer.message_id)
    assert host.attempts == []
    assert [e.decision for e in await _unlock_audit(world)] == ["dropped"]
    # Power-cycled back into its initrd, the machine can be unlocked again.
    host.reboot()
    await host.wait_for_stage("initrd")
    await _ask_unlock(world, op)
    await tg.send_text(op, host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=30)
    assert [a.correct for a in host.attempts] == [True]


async def test_three_wrong_passphrases_cool_down(world: World) -> None:
    host = await _in_initrd(world)
    op, tg = world.op, world.rig.tg
    await _ask_unlock(world, op)
    for attempt in (2, 3):
        await tg.send_text(op, f"{WRONG} {attempt}")
        await tg.wait_for_message(op, _says(f"attempt {attempt} of 3"))
    await tg.send_text(op, WRONG)
    alert = await tg.wait_for_message(op, lambda m: "wrong passphrases" in m.body)
    assert alert.body.startswith(
        "🚨 3 wrong passphrases for clawsiecats; no more attempts for 5 min"
    )
    unlocker = world.rig.engine.unlocker
    await eventually(lambda: _true(not unlocker.active("clawsiecats")), what="the session's end")
    again = await world.rig.ask(op, "/unlock clawsiecats")
    assert again.body == "Checking clawsiecats's initrd…"
    cooling = await tg.wait_for_message(op, lambda m: "cooling down" in m.body)
    assert cooling.body.startswith("❌ clawsiecats is cooling down after wrong passphrases")
    assert host.wrong_attempts == 3
    assert host.correct_attempts == 0
    decisions = [e.decision for e in await _unlock_audit(world)]
    assert decisions == ["wrong", "wrong", "wrong", "cooldown"]


async def test_two_machines_waiting_at_once_take_replies(world: World) -> None:
    hosts = {}
    for name in ("alpha", "beta"):
        hosts[name] = world.lab.start_installed_host(name)
        world.machine(name, hosts[name])
    await _start(world)
    for name, host in hosts.items():
        await world.pin(name, host)
    op, tg = world.op, world.rig.tg
    prompts = {}
    for name in hosts:
        await tg.send_text(op, f"/unlock {name}")
        prompts[name] = await tg.wait_for_message(op, _says(f"🔐 {name} is"))
    guess = await tg.send_text(op, hosts["alpha"].luks_passphrase or "")
    hint = await tg.wait_for_message(op, lambda m: "several answers" in m.body)
    assert "(unlock alpha, unlock beta)" in hint.body
    assert tg.is_deleted(op, guess.message_id)
    for name, host in hosts.items():
        await tg.send_text(op, host.luks_passphrase or "", reply_to=prompts[name])
        await tg.wait_for_message(op, _says(f"🔓 {name} unlocked"), timeout=30)
    for host in hosts.values():
        assert [a.correct for a in host.attempts] == [True]
        assert host.stage == "booted"


async def test_unlock_of_a_running_machine_says_it_is_up(world: World) -> None:
    host = world.lab.start_installed_host("luks", stage="booted")
    world.machine("clawsiecats", host)
    await _start(world)
    await world.pin("clawsiecats", host)
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/unlock clawsiecats")
    up = await tg.wait_for_message(op, lambda m: m.body.startswith("✅"))
    assert up.body == "✅ clawsiecats is already up"
    assert not [m for m in tg.bot_messages(op) if _is_prompt(m)]


async def test_a_reply_to_a_prompt_from_before_a_restart_is_deleted(world: World) -> None:
    host = world.lab.start_installed_host("clawsiecats", initrd="askpass")
    world.machine("clawsiecats", host, initrd_host_key=host.initrd_host_key or "")
    await world.start()
    op, tg = world.op, world.rig.tg
    prompt = await _ask_unlock(world, op)
    await world.rig.restart()
    answer = await tg.send_text(op, host.luks_passphrase or "", reply_to=prompt)
    note = await tg.wait_for_message(op, lambda m: "no longer open" in m.body)
    assert "Nothing was sent" in note.body
    assert tg.is_deleted(op, answer.message_id)
    assert host.correct_attempts == 0


async def test_a_slow_key_check_is_waited_for_not_taken_for_an_accepted_answer(
    world: World,
) -> None:
    """The scripted initrd's cryptsetup derives the key for longer than ``unlock_settle``
    before asking again: a wrong answer is still judged wrong (as a slow VPS does it)."""
    host = await _in_initrd(world, "askpass")
    host.set_askpass_verify(FAST["unlock_settle"] + 2.0)
    op, tg = world.op, world.rig.tg

    await _ask_unlock(world, op)
    await tg.send_text(op, WRONG)
    again = await tg.wait_for_message(op, lambda m: "attempt 2 of 3" in m.body, timeout=40)

    assert again.body.startswith("❌ wrong passphrase, attempt 2 of 3.")
    assert not [m for m in tg.bot_messages(op) if "Passphrase handed to" in m.body]
    assert [(a.correct, a.via) for a in host.attempts] == [(False, "askpass")]
    right = await tg.send_text(op, host.luks_passphrase or "", reply_to=again)
    done = await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=60)
    assert done.body.startswith("🔓 clawsiecats unlocked by @opal, up after ")
    assert tg.is_deleted(op, right.message_id)
