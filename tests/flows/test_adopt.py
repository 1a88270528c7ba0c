"""Machines installed without the bot, end to end over the fake Bot API and the lab: keys
from sops, the booted system, the inventory and /adopt, and the contradictions between them.

The lab hosts are laid out as if installed by hand (persisted host key, initrd key in /boot,
a LUKS header) and start directly in their booted stage; the bot never installed them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.core.keys import fingerprint
from bot.remote.pins import booted_source
from tests.fake_telegram import FakeMessage
from tests.lab import keys
from tests.lab.host import LabHost
from tests.service.cli import deploybot
from tests.waiting import eventually
from tests.world import HOST_KEY_SECRET, World

FAST: dict[str, Any] = {"alert_after": 2, "alert_batch": 0.3, "unlock_settle": 1.0}
PROBES = "300ms"
FROM_BOOT = booted_source("/boot/ssh_host_ed25519_key")
PROMPT = "waiting for its disk passphrase"


def sops_key_file(world: World) -> Path:
    """The sops-held private key as a file, for the lab to install it as the host's key."""
    path = world.root / "sops_host_key"
    path.write_text(world.host_private_key)
    path.chmod(0o600)
    return path


def hand_installed(world: World, name: str, *, from_sops: bool, **options: Any) -> LabHost:
    system_key = sops_key_file(world) if from_sops else None
    return world.lab.start_installed_host(
        name, stage="booted", system_host_key=system_key, **options
    )


async def state_is(world: World, name: str, state: str) -> bool:
    return (await world.rig.svc.store.machine(name)).state == state


def fp(key: str | None) -> str:
    return fingerprint(key or "")


def said(world: World, text: str) -> list[FakeMessage]:
    return [m for m in world.rig.tg.bot_messages(world.op) if text in m.body]


async def test_sops_only_machine_is_watched_reboots_and_is_unlocked(world: World) -> None:
    host = hand_installed(world, "luks", from_sops=True)
    world.machine("clawsiecats", host, probe_interval=PROBES)
    await world.start(**FAST)
    store, op, tg = world.rig.svc.store, world.op, world.rig.tg
    await eventually(lambda: state_is(world, "clawsiecats", "up"), timeout=15, what="up")

    async def initrd_read() -> bool:
        known = await store.machine("clawsiecats")
        return known.initrd_host_key == host.initrd_host_key

    await eventually(initrd_read, timeout=15, what="the initrd key read from the system")
    known = await store.machine("clawsiecats")
    assert known.initrd_host_key_source == FROM_BOOT
    assert known.host_key == ""  # the system key is the sops key's public half, not recorded
    status = await world.rig.ask(op, "/status clawsiecats", timeout=15)
    assert f"system key {fp(host.system_host_key)} (sops ({HOST_KEY_SECRET}))" in status.body
    assert f"initrd key {fp(host.initrd_host_key)} ({FROM_BOOT})" in status.body

    before = host.boot_id
    host.reboot()
    await tg.wait_for_message(
        op, lambda m: "rebooted unexpectedly and waits in its initrd" in m.body, timeout=15
    )
    prompt = await tg.wait_for_message(op, lambda m: PROMPT in m.body, timeout=15)
    assert f"initrd key {fp(host.initrd_host_key)} verified" in prompt.body
    await tg.send_text(op, host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "clawsiecats unlocked by @opal" in m.body, timeout=30)
    assert host.stage == "booted"
    assert host.boot_id != before
    assert [a.correct for a in host.attempts] == [True]
    # The private half never lands anywhere: not in the database, not in the state folder.
    body = world.host_private_key.split("\n")[1]
    for path in [world.rig.root / "deploybot.sqlite3", *(world.rig.root / "state").rglob("*")]:
        if path.is_file():
            assert body.encode() not in path.read_bytes(), path


async def test_adopt_pins_on_confirm_only_then_reboot_tests(world: World) -> None:
    host = hand_installed(world, "luks", from_sops=False)
    world.machine("vault", host, host_key_secret="", probe_interval="1h")
    await world.start(**FAST)
    op, tg, store = world.op, world.rig.tg, world.rig.svc.store
    refusal = await world.rig.ask(op, "/reboot vault")
    assert "no pinned host key: /adopt vault" in refusal.body

    group = tg.group(-100, "ops")
    await tg.send_text(op, "/adopt vault", chat=group)
    ask = await tg.wait_for_message(group, lambda m: bool(m.buttons), timeout=15)
    assert fp(host.system_host_key) in ask.body
    assert "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub" in ask.body
    query = await tg.press(world.admin, ask, ask.button_data("Pin this key"))
    assert (await tg.wait_for_callback_answer(query)).text == (
        "Only the person who asked can answer this."
    )
    assert (await store.machine("vault")).host_key == ""
    second = await world.rig.ask(op, "/adopt vault", chat=group)
    assert "already waiting for a confirmation" in second.body
    await tg.press_button(op, ask, "Pin this key")
    done = await tg.wait_for_message(group, lambda m: "📌 vault" in m.body, timeout=15)
    assert f"system key {fp(host.system_host_key)} pinned (confirmed with /adopt by @opal)" in (
        done.body
    )
    assert f"initrd key {fp(host.initrd_host_key)} read from the booted system" in done.body
    known = await store.machine("vault")
    assert known.host_key == host.system_host_key
    assert known.initrd_host_key == host.initrd_host_key
    assert known.initrd_host_key_source == FROM_BOOT
    decisions = [e.decision for e in await store.recent_audit(50) if e.action == "adopt"]
    assert decisions == ["pinned"]

    again = await world.rig.ask(op, "/adopt vault", timeout=15)
    assert "already has a pinned system key" in again.body
    assert "Nothing changed" in again.body
    assert await store.machine("vault") == known

    await tg.send_text(op, "/reboot vault")
    confirm = await tg.wait_for_message(op, lambda m: bool(m.buttons), timeout=15)
    await tg.press_button(op, confirm, "Reboot")
    await world.answer_secret(op, PROMPT, host.luks_passphrase or "")
    report = await tg.wait_for_message(
        op, lambda m: "Reboot test of vault passed" in m.body, timeout=60
    )
    assert "unlock" in report.body
    assert host.correct_attempts == 1


async def test_repin_after_a_reinstall_by_hand_shows_old_and_new(world: World) -> None:
    host = hand_installed(world, "plain", from_sops=False, luks=False)
    world.machine("web", host, luks=False, host_key_secret="", probe_interval="1h")
    await world.start(**FAST)
    op, tg, store = world.op, world.rig.tg, world.rig.svc.store
    old = host.system_host_key
    await tg.send_text(op, "/adopt web")
    ask = await tg.wait_for_message(op, lambda m: bool(m.buttons), timeout=15)
    await tg.press_button(op, ask, "Pin this key")
    await tg.wait_for_message(op, lambda m: "📌 web" in m.body, timeout=15)

    # Reinstalled by hand: a new host key, then a reboot.
    keys.generate_ed25519(host.persist / "etc/ssh/ssh_host_ed25519_key", "root@web")
    host.reboot()
    await host.wait_for_stage("booted")
    new = host.system_host_key
    assert new != old
    await tg.send_text(op, "/adopt web")
    offer = await tg.wait_for_message(op, lambda m: bool(m.buttons), timeout=15)
    assert f"old: {fp(old)} (confirmed with /adopt by @opal)" in offer.body
    assert f"new: {fp(new)}" in offer.body
    await tg.press_button(op, offer, "Cancel")
    await tg.wait_for_message(op, lambda m: "/adopt web cancelled" in m.body, timeout=15)
    assert (await store.machine("web")).host_key == old
    await tg.send_text(op, "/adopt web")
    offer = await tg.wait_for_message(op, lambda m: bool(m.buttons), timeout=15)
    await tg.press_button(op, offer, "Re-pin the new key")
    await tg.wait_for_message(op, lambda m: f"system key {fp(new)} pinned" in m.body, timeout=15)
    assert (await store.machine("web")).host_key == new
    decisions = [e.decision for e in await store.recent_audit(50) if e.action == "adopt"]
    assert decisions == ["re-pinned", "not confirmed", "pinned"]
    check = await world.rig.ask(op, "/check web", timeout=15)
    assert "Checking web" in check.body
    await tg.wait_for_message(op, lambda m: m.body.startswith("web: "), timeout=15)


async def test_adopt_never_replaces_a_sops_key(world: World) -> None:
    host = hand_installed(world, "plain", from_sops=False, luks=False)
    # The inventory names a sops key that is not the one the host presents.
    world.machine("web", host, luks=False, host_key_secret=HOST_KEY_SECRET, probe_interval="1h")
    await world.start(**FAST)
    reply = await world.rig.ask(world.op, "/adopt web", timeout=15)
    assert "I do not replace a key from the inventory or sops" in reply.body
    assert fp(host.system_host_key) in reply.body
    assert (await world.rig.svc.store.machine("web")).host_key == ""


async def test_inventory_key_contradicting_sops_fails_check_and_is_never_healthy(
    world: World,
) -> None:
    host = hand_installed(world, "luks", from_sops=True)
    other = keys.generate_ed25519(world.root / "other_key", "someone@else")
    world.machine("clawsiecats", host, host_key=other, probe_interval=PROBES)
    world.rig.write_inventory(world.inventory())
    env = {**world.rig.env, "TELEGRAM_BOT_TOKEN": world.rig.tg.token, "HOME": str(world.root)}
    env["DEPLOYBOT_INVENTORY"] = str(world.rig.root / "machines.toml")
    env["DEPLOYBOT_STATE_DIR"] = str(world.rig.root / "state")
    code, out, err = await deploybot("check", cwd=world.root, env=env)
    assert code == 1, out + err
    row = next(line for line in out.splitlines() if line.startswith("FAIL  clawsiecats: keys"))
    assert fp(other) in row
    assert fp(host.system_host_key) in row
    assert "PRIVATE KEY" not in out + err

    admin, op, tg = world.admin, world.op, world.rig.tg  # their private chats are open
    await world.start(**FAST)
    told = await tg.wait_for_message(admin, lambda m: "Host keys that" in m.body, timeout=15)
    assert "clawsiecats: system key" in told.body
    assert fp(other) in told.body
    assert fp(host.system_host_key) in told.body
    alert = await tg.wait_for_message(op, lambda m: "🚨 clawsiecats" in m.body, timeout=15)
    assert "contradict" in alert.body
    assert (await world.rig.svc.store.machine("clawsiecats")).state != "up"
    refused = await world.rig.ask(op, "/check clawsiecats")
    assert "contradict" in refused.body
    status = await world.rig.ask(op, "/status clawsiecats", timeout=15)
    assert "contradiction, system key" in status.body
    assert not said(world, "✓ up")
    assert len([m for m in tg.bot_messages(admin) if "Host keys that" in m.body]) == 1


async def test_initrd_with_another_key_than_the_booted_system_says_gets_nothing(
    world: World,
) -> None:
    host = hand_installed(world, "luks", from_sops=True)
    world.machine("clawsiecats", host, probe_interval=PROBES)
    await world.start(**FAST)
    store, op, tg = world.rig.svc.store, world.op, world.rig.tg

    async def initrd_read() -> bool:
        return (await store.machine("clawsiecats")).initrd_host_key_source == FROM_BOOT

    await eventually(initrd_read, timeout=15, what="the initrd key read from the system")
    read = host.initrd_host_key
    # Someone else's initrd: another key at /boot, then a reboot into it.
    keys.generate_ed25519(host.root / "boot/ssh_host_ed25519_key", "initrd@evil")
    host.reboot()
    await host.wait_for_stage("initrd")
    assert host.initrd_host_key != read
    await tg.send_text(op, "/unlock clawsiecats")
    alert = await tg.wait_for_message(
        op, lambda m: "The passphrase was NOT sent" in m.body, timeout=20
    )
    assert "initrd host key mismatch" in alert.body
    assert f"pinned:    {fp(read)} ({FROM_BOOT})" in alert.body
    assert f"presented: {fp(host.initrd_host_key)}" in alert.body
    assert not said(world, PROMPT)
    assert host.attempts == []
    assert (await store.machine("clawsiecats")).initrd_host_key == read


async def test_keys_from_the_inventory_alone_are_enough(world: World) -> None:
    host = hand_installed(world, "luks", from_sops=False)
    world.machine(
        "vault",
        host,
        host_key_secret="",
        host_key=host.system_host_key,
        initrd_host_key=host.initrd_host_key,
        probe_interval=PROBES,
    )
    await world.start(**FAST)
    await eventually(lambda: state_is(world, "vault", "up"), timeout=15, what="vault up")
    status = await world.rig.ask(world.op, "/status vault", timeout=15)
    assert f"system key {fp(host.system_host_key)} (host_key in the inventory)" in status.body
    assert f"initrd key {fp(host.initrd_host_key)} (initrd_host_key in the inventory)" in (
        status.body
    )
    known = await world.rig.svc.store.machine("vault")
    assert (known.host_key, known.initrd_host_key) == ("", "")  # nothing to read or record


async def test_a_hand_installed_machine_is_updated_never_erased_by_deploy(
    world: World,
) -> None:
    """A machine installed by hand answers with its pinned key: /deploy offers to update it
    and never to erase it; /reinstall may."""
    host = hand_installed(world, "plain", from_sops=True, luks=False)
    world.machine("web", host, luks=False, flake_attr="clawsiecats")
    await world.start(**FAST)
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/deploy web")
    offer = await tg.wait_for_message(op, lambda m: bool(m.buttons), timeout=60)
    assert offer.body.startswith("Update web? Its disks are not touched.")
    assert not [m for m in tg.bot_messages(op) if "erase" in m.body.lower()]
    await tg.press_button(op, offer, "Cancel")
    await tg.wait_for_message(op, lambda m: "(job 1) — cancelled" in m.body, edits=True)
    await tg.send_text(op, "/reinstall web")
    ask = await tg.wait_for_message(op, lambda m: "type the machine's name" in m.body, timeout=20)
    assert f"its pinned host key {fp(host.system_host_key)} ✓" in ask.body
    await tg.send_text(op, "not-web")
    await tg.wait_for_message(op, lambda m: "(job 2) — cancelled" in m.body, edits=True)
    assert host.stage == "booted"
