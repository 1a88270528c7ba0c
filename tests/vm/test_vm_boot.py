"""The guest itself, before the bot meets it: a real kernel and initramfs open the LUKS2
root after an answer over the initramfs's SSH; a reboot comes back through the initramfs
with the same pinned keys."""

from __future__ import annotations

import contextlib
import time

import asyncssh

from tests.vm.conftest import BootGuest
from tests.vm.guest import Image

WRONG = "not the disk passphrase"


async def test_boots_through_the_initramfs_and_a_reboot_comes_back_there(
    scripted_image: Image, boot: BootGuest
) -> None:
    machine = await boot(scripted_image)
    start = time.monotonic()
    up = await machine.wait_initrd()
    # A wrong answer is asked again; end of input ends the session, as on NixOS.
    out = await machine.unlock_by_hand(WRONG)
    assert out.count("Passphrase for /dev/vda: ") == 2, out
    assert out.rstrip().endswith("End of file reached. Exiting shell."), out
    out = await machine.unlock_by_hand()
    assert out.startswith("Passphrase for /dev/vda: "), out
    booted = await machine.wait_system()
    print(
        f"initramfs SSH after {up:.1f}s; system SSH {booted:.1f}s after the answer; "
        f"{time.monotonic() - start:.1f}s in all"
    )
    assert (await machine.run("findmnt -no SOURCE /")).strip() == "/dev/mapper/root"
    status = await machine.run("cryptsetup status root")
    assert "type:    LUKS2" in status
    assert await machine.wait_running() in ("running", "degraded")
    before = await machine.boot_id()

    # The reboot may take the session down before it answers.
    with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
        await machine.run("systemctl reboot", check=False, timeout=10)
    # The same pinned initramfs key answers again (connect() pins it).
    await machine.wait_initrd()
    out = await machine.unlock_by_hand()
    assert out.startswith("Passphrase for /dev/vda: "), out
    await machine.wait_system()
    assert await machine.boot_id() != before
