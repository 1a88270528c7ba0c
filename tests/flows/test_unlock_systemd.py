"""Unlocking a systemd initrd through the real ``systemd-tty-ask-password-agent``: tries
per boot, one query per LUKS volume, recovery keys, passphrases that cannot be typed, and
nothing echoed back into buffers that outlive the relay.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import asyncssh
import pytest

from bot.core.secret import Secret
from bot.remote import initrd
from bot.remote.initrd import Relay, relay_passphrase
from bot.remote.target import read_boot_id
from bot.remote.transcript import Transcript
from tests.fake_telegram import FakeMessage
from tests.lab.ask_password import GIVING_UP
from tests.lab.clients import connect
from tests.lab.host import LabHost
from tests.world import World

FAST: dict[str, Any] = {"unlock_settle": 2.0}
PROMPT = "is waiting for its disk"


def _says(text: str) -> Callable[[FakeMessage], bool]:
    return lambda message: text in message.body


def _is_prompt(message: FakeMessage) -> bool:
    return PROMPT in message.body


async def _systemd_host(world: World, **options: Any) -> LabHost:
    host = world.lab.start_installed_host("luks", initrd="systemd", **options)
    world.machine("clawsiecats", host)
    await world.start(**FAST)
    await world.pin("clawsiecats", host)
    await host.wait_until(lambda: bool(host.pending_queries), 10, "a query")
    return host


async def test_third_wrong_passphrase_is_a_give_up_and_a_reboot_brings_new_tries(
    world: World,
) -> None:
    host = await _systemd_host(world)
    op, tg = world.op, world.rig.tg
    first_boot = host.boot_id
    await tg.send_text(op, "/unlock clawsiecats")
    prompt = await tg.wait_for_message(op, _is_prompt)
    assert "Disk disk-main-luks (crypted): try 1 of 3 this boot." in prompt.body
    for attempt in (1, 2, 3):
        await tg.send_text(op, f"wrong {attempt}")
        if attempt < 3:
            await tg.wait_for_message(op, _says(f"attempt {attempt + 1} of 3"))
    gave_up = await tg.wait_for_message(op, lambda m: "given up" in m.body, timeout=30)
    assert gave_up.body.startswith(
        "🚨 clawsiecats: its initrd has given up after 3 wrong tries this boot"
    )
    assert "Only a reboot brings new tries." in gave_up.body
    assert not [m for m in tg.bot_messages(op) if "took the passphrase" in m.body]
    assert host.console[-1] == f"systemd-cryptsetup[crypted]: {GIVING_UP}"
    offer = await tg.wait_for_message(op, lambda m: bool(m.buttons), since=0)
    assert offer.body.startswith("🔁 Reboot clawsiecats now")
    # A new /unlock on the same boot is not a fresh set of tries.
    await tg.send_text(op, "/unlock clawsiecats")
    again = await tg.wait_for_message(
        op, lambda m: "given up" in m.body and m.message_id != gave_up.message_id, timeout=30
    )
    assert again.body == gave_up.body
    assert host.wrong_attempts == 3
    assert host.stage == "initrd"
    await tg.press_button(op, offer, "Reboot clawsiecats now")
    await tg.wait_for_message(op, lambda m: "is rebooting" in m.body, timeout=20)
    await host.wait_until(lambda: host.boot_id != first_boot, 20, "the reboot")
    fresh = await tg.wait_for_message(
        op,
        lambda m: "try 1 of 3 this boot" in m.body and m.message_id > offer.message_id,
        timeout=30,
    )
    await tg.send_text(op, host.luks_passphrase or "", reply_to=fresh)
    await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=30)
    assert host.stage == "booted"
    assert [a.correct for a in host.attempts] == [False, False, False, True]


async def test_tries_spent_this_boot_are_remembered_across_a_restart(world: World) -> None:
    host = await _systemd_host(world)
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/unlock clawsiecats")
    await tg.wait_for_message(op, _is_prompt)
    for attempt in (1, 2, 3):
        await tg.send_text(op, f"wrong {attempt}")
        if attempt < 3:
            await tg.wait_for_message(op, _says(f"attempt {attempt + 1} of 3"))
    gave_up = await tg.wait_for_message(op, _says("given up"), timeout=30)
    await world.rig.restart()
    await tg.send_text(op, "/unlock clawsiecats")
    again = await tg.wait_for_message(
        op, lambda m: m.message_id > gave_up.message_id and "🚨" in m.body, timeout=30
    )
    assert again.body == gave_up.body
    assert host.wrong_attempts == 3


def _disk_and_try(body: str) -> tuple[str, int]:
    match = re.search(r"Disk (.+?): try (\d) of 3 this boot", body)
    assert match, body
    return match.group(1), int(match.group(2))


async def test_two_volumes_are_asked_for_one_at_a_time_and_each_judged(world: World) -> None:
    volumes = [("disk-main-luks", "crypted"), ("disk-data-luks", "cryptdata")]
    disks = {"disk-main-luks (crypted)", "disk-data-luks (cryptdata)"}
    host = await _systemd_host(world, volumes=volumes)
    await host.wait_until(lambda: len(host.pending_queries) == 2, 10, "two queries")
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/unlock clawsiecats")
    first = await tg.wait_for_message(op, _is_prompt)
    assert "2 disks are asking" in first.body
    wrong_disk, tried = _disk_and_try(first.body)
    assert wrong_disk in disks
    assert tried == 1
    await tg.send_text(op, "wrong")
    second = await tg.wait_for_message(op, lambda m: "attempt 2 of 3" in m.body, timeout=20)
    assert f"(That was disk {wrong_disk}.)" in second.body
    # The initrd asks in its own order: the same disk again (try 2) or the other (try 1).
    asked, tried = _disk_and_try(second.body)
    assert tried == (2 if asked == wrong_disk else 1)
    await tg.send_text(op, host.luks_passphrase or "")
    took = await tg.wait_for_message(op, lambda m: "took it" in m.body, timeout=20)
    assert took.body.startswith(f"✅ disk {asked} took it; 1 more disk(s) to go.")
    last, tried = _disk_and_try(took.body)
    assert last == (disks - {asked}).pop()
    assert tried == (2 if last == wrong_disk else 1)
    await tg.send_text(op, host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=30)
    assert [a.correct for a in host.attempts] == [False, True, True]
    assert host.stage == "booted"


async def test_recovery_key_prompt_is_a_prompt_too(world: World) -> None:
    host = await _systemd_host(world, recovery_key=True)
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/unlock clawsiecats")
    prompt = await tg.wait_for_message(op, _is_prompt)
    assert prompt.body.startswith("🔐 clawsiecats is waiting for its disk recovery key;")
    assert "Reply with the recovery key" in prompt.body
    await tg.send_text(op, host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=30)
    assert [a.correct for a in host.attempts] == [True]


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\t", "TAB"),
        ("\x7f", "DEL"),
        ("\x15", "Ctrl-U"),
        ("\x03", "Ctrl-C"),
        ("\x04", "Ctrl-D"),
        ("\x1b", "0x1b"),
        ("\n", "a line break"),
    ],
)
async def test_a_passphrase_with_control_characters_is_refused(
    world: World, char: str, name: str
) -> None:
    host = await _systemd_host(world)
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/unlock clawsiecats")
    await tg.wait_for_message(op, _is_prompt)
    typed = await tg.send_text(op, f"pass{char}word")
    refusal = await tg.wait_for_message(op, lambda m: "did not send" in m.body)
    assert refusal.body.startswith("⚠️ I did not send that passphrase to clawsiecats: it contains")
    assert name in refusal.body
    assert "Nothing was sent and no try was used." in refusal.body
    assert tg.is_deleted(op, typed.message_id)
    again = await tg.wait_for_message(op, lambda m: "was not sent" in m.body and _is_prompt(m))
    assert "try 1 of 3 this boot" in again.body
    assert host.attempts == []
    await tg.send_text(op, host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "unlocked by @opal" in m.body, timeout=30)
    assert [a.correct for a in host.attempts] == [True]


async def test_relay_output_never_holds_the_passphrase_and_is_wiped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = world.lab.start_installed_host("relay", initrd="systemd", boot_delay=5.0)
    await host.wait_until(lambda: bool(host.pending_queries), 10, "a query")
    transcripts: list[Transcript] = []
    held: list[bytes] = []
    real_init, real_wipe = Transcript.__init__, Transcript.wipe

    def spy_init(self: Transcript, process: Any) -> None:
        real_init(self, process)
        transcripts.append(self)

    def spy_wipe(self: Transcript) -> None:
        held.append(bytes(self.seen))
        real_wipe(self)

    monkeypatch.setattr(Transcript, "__init__", spy_init)
    monkeypatch.setattr(Transcript, "wipe", spy_wipe)
    passphrase = (host.luks_passphrase or "").encode()
    async with await connect(world.lab, host, initrd=True) as conn:
        started = asyncio.get_running_loop().time()
        outcome = await relay_passphrase(conn, Secret(passphrase), mode="systemd", settle=1.0)
        took = asyncio.get_running_loop().time() - started
    print(f"relay on the real agent: {took:.2f} s ({outcome.result.value})")
    assert outcome.result is Relay.ACCEPTED
    assert outcome.answered is not None
    assert outcome.answered.disk == "disk-main-luks (crypted)"
    assert held, "the relay kept output"
    assert any(b"(press TAB for no echo)" in h for h in held)
    assert not [h for h in held if passphrase in h], "the passphrase came back in clear"
    assert all(len(t.seen) == 0 for t in transcripts)
    assert host.correct_attempts == 1
    # A passphrase that is not typeable never reaches the connection.
    async with await connect(world.lab, host, initrd=True) as conn:
        refused = await relay_passphrase(conn, Secret(b"a\tb"), mode="systemd")
    assert refused.result is Relay.REFUSED
    assert host.correct_attempts == 1
    assert host.wrong_attempts == 0


async def test_no_tty_listing_is_read_only(world: World) -> None:
    host = world.lab.start_installed_host("list", initrd="systemd")
    await host.wait_until(lambda: bool(host.pending_queries), 10, "a query")
    async with await connect(world.lab, host, initrd=True) as conn:
        queries = await initrd.list_queries(conn)
        boot = await read_boot_id(conn, 10.0)
        none = await conn.run("true", stdin=asyncssh.DEVNULL)
    assert none.exit_status == 0
    assert queries is not None
    assert [q.disk for q in queries] == ["disk-main-luks (crypted)"]
    assert boot == host.boot_id
    assert host.attempts == []


async def test_an_initrd_that_echoes_the_answer_never_gets_it_shown(world: World) -> None:
    """A hostile initrd names the answer it was given in its next query: the prompt, the
    alerts, the audit and the database show it masked, never in clear."""
    host = await _systemd_host(world)
    host.hostile_echo = True
    host.reboot()
    await host.wait_for_stage("initrd", timeout=30)
    await host.wait_until(lambda: bool(host.pending_queries), 10, "a query")
    op, tg = world.op, world.rig.tg
    secret = "tr0ub4dor-and-3"
    await tg.send_text(op, "/unlock clawsiecats")
    await tg.wait_for_message(op, _is_prompt)
    await tg.send_text(op, secret)
    await host.wait_until(lambda: any(secret in q for q in host.pending_queries), 20, "the echo")
    # The next prompt names the disk the initrd now claims to be: the answer, masked.
    again = await tg.wait_for_message(op, lambda m: _is_prompt(m) and "***" in m.body, timeout=30)
    assert secret not in again.body
    assert host.luks_passphrase is not None
    await tg.send_text(op, host.luks_passphrase)
    await tg.wait_for_message(op, _says("unlocked by"), timeout=60)
    said = "\n".join(m.body for m in tg.bot_messages(op))
    assert secret not in said
    entries = await world.rig.svc.store.recent_audit(50)
    assert not [e for e in entries if secret in e.detail]
    db = world.rig.svc.store.path
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert secret.encode() not in path.read_bytes()


async def test_a_slow_verdict_is_waited_for_not_taken_for_an_accepted_answer(
    world: World,
) -> None:
    """A real systemd-cryptsetup checks an answer for as long as its key derivation takes
    (9–13 s in the VM lab's slowest guests), with no query pending and its process still
    running: the relay waits for the verdict instead of taking the silence as accepted."""
    host = world.lab.start_installed_host("slow", initrd="systemd", boot_delay=5.0)
    host.verify_seconds = 3.0
    host.reboot()
    await host.wait_for_stage("initrd", timeout=30)
    await host.wait_until(lambda: bool(host.pending_queries), 10, "a query")
    right = Secret(host.luks_passphrase or "")
    async with await connect(world.lab, host, initrd=True) as conn:
        wrong = await relay_passphrase(conn, Secret("not it"), mode="systemd", settle=1.0)
        assert wrong.result is Relay.WRONG, wrong
        accepted = await relay_passphrase(conn, right, mode="systemd", settle=1.0)
    assert accepted.result is Relay.ACCEPTED, accepted
    assert [a.correct for a in host.attempts] == [False, True]
