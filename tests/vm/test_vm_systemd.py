"""The systemd flavour against the bot's own relay (bot/remote/initrd.py): a real
systemd-cryptsetup asks, the real ``systemd-tty-ask-password-agent`` answers over the
initramfs's OpenSSH, a wrong answer costs a try and is asked again, the right one boots the
system, whose OpenSSH has another pinned key; a reboot comes back through the initramfs."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncssh
import pytest

from bot.core.keys import fingerprint
from bot.core.secret import Secret
from bot.remote.initrd import Query, Relay, list_queries, relay_passphrase
from bot.remote.target import read_boot_id
from tests.vm import kvm
from tests.vm.conftest import BootGuest
from tests.vm.control import Machine
from tests.vm.flavour_systemd import SYSTEMD
from tests.vm.guest import PASSPHRASE, Image, cache_dir, image
from tests.vm.world import BOOT, PROMPT, STAGES, VmWorld, stage_times

MESSAGE = "Please enter passphrase for disk root:"
WRONG = "not the disk passphrase"
VERDICT = "Failed to activate with specified passphrase"


@pytest.fixture(scope="session")
def systemd_image() -> Image:
    """The systemd flavour's image (built on first use, then cached)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    built = image(SYSTEMD)
    kvm.choose_accelerator(built.kernel, cache_dir())
    return built


async def pending(conn: asyncssh.SSHClientConnection, timeout: float = 60) -> list[Query]:
    """The queries ``--list`` shows, waiting for the first: systemd-cryptsetup may ask
    after the initramfs's sshd is up."""
    deadline = time.monotonic() + timeout
    while True:
        queries = await list_queries(conn)
        assert queries is not None, "the agent did not answer --list"
        if queries or time.monotonic() >= deadline:
            return queries
        await asyncio.sleep(0.2)


async def unlock(machine: Machine, wrong_first: bool) -> float:
    """Answer through the bot's relay (a wrong answer first, when asked); the seconds from
    the right answer to the system's SSH."""
    async with await machine.connect(initrd=True) as conn:
        first = await pending(conn)
        assert [q.message for q in first] == [MESSAGE], first
        if wrong_first:
            outcome = await relay_passphrase(conn, Secret(WRONG), mode="systemd")
            assert outcome.result is Relay.WRONG, outcome
            # A new query for the same disk, from the same systemd-cryptsetup.
            assert [(q.message, q.pid) for q in outcome.pending] == [(MESSAGE, first[0].pid)]
        outcome = await relay_passphrase(conn, Secret(PASSPHRASE), mode="systemd")
        sent = time.monotonic()
        assert outcome.result is Relay.ACCEPTED, outcome
        assert outcome.answered is not None
        assert outcome.answered.disk == "root"
    await machine.wait_system()
    return time.monotonic() - sent


async def test_systemd_cryptsetup_is_answered_by_the_agent_over_the_initramfs_ssh(
    systemd_image: Image, boot: BootGuest
) -> None:
    machine = await boot(systemd_image)
    up = await machine.wait_initrd()
    async with await machine.connect(initrd=True) as conn:
        initrd_boot = await read_boot_id(conn, 10.0)
        # The initramfs runs systemd as PID 1, not the system yet.
        assert (await conn.run("cat /proc/1/comm", check=True)).stdout == "systemd\n"
        assert (await conn.run("test -e /etc/initrd-release", check=False)).exit_status == 0
    took = await unlock(machine, wrong_first=True)
    print(f"initramfs SSH up after {up:.1f}s; system SSH {took:.1f}s after the right answer")
    assert await machine.boot_id() == initrd_boot
    assert (await machine.run("findmnt -no SOURCE /")).strip() == "/dev/mapper/root"
    assert "type:    LUKS2" in await machine.run("cryptsetup status root")
    # The verdict on the wrong try went to the journal, never to the SSH session.
    journal = await machine.run("journalctl -b -o cat --no-pager -t systemd-cryptsetup")
    assert journal.count(VERDICT) == 1, journal

    # The reboot may take the session down before it answers.
    with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
        await machine.run("systemctl reboot", check=False, timeout=10)
    # A real reboot: the same pinned initramfs key answers again, with fresh tries.
    await machine.wait_initrd()
    await unlock(machine, wrong_first=False)
    assert await machine.boot_id() != initrd_boot


async def test_after_three_wrong_tries_the_initrd_stays_and_asks_no_more(
    systemd_image: Image, boot: BootGuest
) -> None:
    """What the bot's GAVE_UP judgement rests on (bot/flows/unlock/systemd.py): after the
    third wrong answer nothing asks again, and the initramfs's SSH stays up."""
    machine = await boot(systemd_image)
    await machine.wait_initrd()
    async with await machine.connect(initrd=True) as conn:
        await pending(conn)
        outcomes = [
            await relay_passphrase(conn, Secret(f"{WRONG} {n}"), mode="systemd") for n in range(3)
        ]
        assert [o.result for o in outcomes[:2]] == [Relay.WRONG, Relay.WRONG], outcomes
        last = outcomes[2]
        # The relay cannot tell: nothing asks again and the initrd stays.
        assert (last.result, last.stayed, last.pending) == (Relay.ACCEPTED, True, ()), last
        state = await conn.run("systemctl is-active systemd-cryptsetup@root.service", check=False)
        assert state.stdout == "failed\n", state.stdout
        assert await list_queries(conn) == []
        journal = await conn.run("journalctl -b -o cat --no-pager -t systemd-cryptsetup")
        assert "Too many attempts to activate; giving up." in str(journal.stdout)
    # A fresh login still reaches the initrd: it waits there until someone reboots it.
    async with await machine.connect(initrd=True) as conn:
        assert await list_queries(conn) == []


async def test_reboot_test_from_the_chat_unlocks_the_systemd_initrd_after_a_wrong_try(
    systemd_image: Image, boot: BootGuest, vm_world: VmWorld
) -> None:
    """The whole path through a real ``deploybot run``: ``/reboot``, a real reboot back
    into the systemd initramfs, the prompt naming the disk that asks, a wrong answer that
    costs one of systemd-cryptsetup's three tries, the right one, the health check."""
    machine = await boot(systemd_image)
    await machine.wait_initrd(BOOT)
    await unlock(machine, wrong_first=False)
    await machine.wait_running(BOOT)
    before = await machine.boot_id()
    vm_world.machine("vm", machine)
    await vm_world.start()
    op, tg = vm_world.op, vm_world.tg

    await vm_world.reboot_now()
    prompt = await vm_world.says(op, PROMPT, timeout=BOOT)
    assert f"initrd key {fingerprint(systemd_image.keys.initrd_public)} verified" in prompt.body
    assert "Disk root: try 1 of 3 this boot." in prompt.body, prompt.body
    wrong = await tg.send_text(op, WRONG, reply_to=prompt)
    again = await vm_world.says(op, "attempt 2 of 3", timeout=180)
    assert "Disk root: try 2 of 3 this boot." in again.body, again.body
    right = await tg.send_text(op, PASSPHRASE, reply_to=again)
    report = await vm_world.says(op, "Reboot test of vm passed", timeout=BOOT)
    print(tg.transcript(op))

    assert stage_times(report) == STAGES
    assert tg.is_deleted(op, wrong.message_id)
    assert tg.is_deleted(op, right.message_id)
    assert await machine.boot_id() != before
    journal = await machine.run("journalctl -b -o cat --no-pager -t systemd-cryptsetup")
    assert journal.count(VERDICT) == 1, journal
