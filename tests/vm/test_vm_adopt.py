"""A guest installed without the bot: its system key comes from sops (the public half of
``host_key_secret``), its initramfs key from ``initrd_host_key_file`` read over the pinned
login to the booted system — the OpenSSH-format copy of dropbear's key the image keeps at
``/boot/ssh_host_ed25519_key`` — and then the bot relays an unlock to the real initramfs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import asyncssh

from bot.core.keys import fingerprint
from bot.remote.pins import booted_source
from tests.lab.sops import make_sops_secrets
from tests.vm.conftest import BootGuest, booted
from tests.vm.guest import INITRD_KEY, PASSPHRASE, Image
from tests.vm.world import BOOT, PROMPT, VmWorld
from tests.waiting import eventually

SECRET = "vm_ssh_host_ed25519_key"


async def test_adopted_guest_keys_from_sops_and_the_booted_system_then_unlocked(
    scripted_image: Image, boot: BootGuest, vm_world: VmWorld, tmp_path: Path
) -> None:
    keys = scripted_image.keys
    machine = await booted(boot, scripted_image)
    secrets = make_sops_secrets(tmp_path / "sops", {SECRET: keys.private("system").read_text()})
    vm_world.env.update(secrets.env)
    vm_world.env["DEPLOYBOT_SOPS"] = secrets.sops
    vm_world.machine(
        "vm",
        machine,
        pin=False,
        secrets_file=str(secrets.path),
        host_key_secret=SECRET,
        initrd_host_key_file=INITRD_KEY,
        probe_interval="5s",
    )
    await vm_world.start()
    op, tg = vm_world.op, vm_world.tg
    initrd_from = f"initrd key {fingerprint(keys.initrd_public)} ({booted_source(INITRD_KEY)})"

    async def initrd_read() -> bool:
        status = await vm_world.rig.ask(op, "/status vm", timeout=60)
        return initrd_from in status.body

    # Asked as a person would, every few seconds: each /status opens a TCP connection to
    # both SSH ports, and a guest under TCG whose sshd is sent one every 50 ms falls behind
    # (each connection forks and re-executes sshd), so the bot's own login then timed out.
    await eventually(
        initrd_read, timeout=180, interval=5.0, what="the initrd key read from the system"
    )
    status = await vm_world.rig.ask(op, "/status vm", timeout=60)
    assert f"system key {fingerprint(keys.system_public)} (sops ({SECRET}))" in status.body

    with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
        await machine.run("systemctl reboot", check=False, timeout=10)
    prompt = await vm_world.says(op, PROMPT, timeout=BOOT)
    assert f"initrd key {fingerprint(keys.initrd_public)} verified" in prompt.body
    await tg.send_text(op, PASSPHRASE, reply_to=prompt)
    await vm_world.says(op, "vm unlocked by @opal", timeout=BOOT)
    assert (await machine.run("findmnt -no SOURCE /")).strip() == "/dev/mapper/root"
