"""The VM lab's figures, measured in one run against one real guest (tests/vm).

Run ``python -m bench.vm`` (root; the first run builds the image). Figures:

- initramfs SSH up → prompt in the chat, during a ``/reboot`` test: from the guest's
  dropbear answering (polled here every 0.2 s) to the bot's prompt reaching the Bot API;
- passphrase → relay done: from the answer reaching the Bot API to the bot editing its
  prompt to "passphrase received", next to a plain ``ssh -p <initrd port> root@guest
  cryptsetup-askpass`` fed the same passphrase on the first boot (connect, answer, verdict);
- the reboot test's stages as the bot reports them.

Not measured: an update against the guest (the guest has nix-bin but no NixOS-shaped
system yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

from tests.fake_telegram import FakeTelegram
from tests.vm import kvm
from tests.vm.control import Machine
from tests.vm.flavour_scripted import SCRIPTED
from tests.vm.guest import PASSPHRASE, cache_dir, image
from tests.vm.qemu import Guest, ssh_banner
from tests.vm.world import PROMPT, VmWorld

os.environ.setdefault("PTB_TIMEDELTA", "true")
BOOT = 900.0


async def _until_banner(machine: Machine, port: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await ssh_banner(machine.address, port):
            return time.monotonic()
        await asyncio.sleep(0.2)
    raise TimeoutError("no initramfs SSH")


async def measure() -> list[str]:
    built = image(SCRIPTED)
    accel = kvm.choose_accelerator(built.kernel, cache_dir())
    lines = [f"accelerator: {accel}"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        guest = Guest(
            "bench",
            built.kernel,
            built.initrd,
            built.cmdline,
            built.disk,
            root / "guest",
            "127.0.9.2",
        )
        guest.start()
        tg = FakeTelegram()
        await tg.start()
        world = VmWorld(tg, root)
        try:
            machine = Machine(guest, built)
            first = await machine.wait_initrd(BOOT)
            lines.append(f"first boot: qemu start → initramfs SSH {first:.1f}s")
            start = time.monotonic()
            await machine.unlock_by_hand()
            plain = time.monotonic() - start
            lines.append(f"plain ssh … cryptsetup-askpass (connect, answer, verdict): {plain:.2f}s")
            up = await machine.wait_system(BOOT)
            lines.append(f"answer → system SSH: {plain + up:.1f}s")
            await machine.wait_running(BOOT)
            world.machine("vm", machine)
            await world.start()
            op = world.op
            await tg.send_text(op, "/reboot vm")
            ask = await world.says(op, "Reboot vm now", timeout=60)
            await tg.press_button(op, ask, "Reboot")
            await asyncio.sleep(0)
            # Wait until the old system is gone, then for the initramfs's dropbear.
            await machine.guest.wait_banner(guest.initrd_port, BOOT)
            banner = time.monotonic()
            prompt = await world.says(op, PROMPT, timeout=BOOT)
            prompted = time.monotonic()
            lines.append(f"initramfs SSH up → prompt in the chat: {prompted - banner:.2f}s")
            sent = time.monotonic()
            await tg.send_text(op, PASSPHRASE, reply_to=prompt)
            await tg.wait_until(
                lambda: "passphrase received" in tg.message(op, prompt.message_id).body,
                timeout=BOOT,
                what="the relay",
            )
            relayed = time.monotonic() - sent
            lines.append(
                f"passphrase → relay done: {relayed:.2f}s "
                f"(plain ssh: {plain:.2f}s; ratio {relayed / plain:.2f})"
            )
            report = await world.says(op, "Reboot test of vm passed", timeout=BOOT)
            lines.append("reboot test stages: " + report.body.splitlines()[1])
        finally:
            with contextlib.suppress(Exception):
                await world.stop()
            guest.stop()
            await tg.stop()
    return lines


def main() -> None:
    for line in asyncio.run(measure()):
        print(line)


if __name__ == "__main__":
    main()
