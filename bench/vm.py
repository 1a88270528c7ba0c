"""The VM lab's figures, measured in one run against one real guest (tests/vm).

Run ``python -m bench.vm`` (root; the first run builds the image). Figures:

- initramfs SSH up → prompt in the chat, during a ``/reboot`` test: from the guest's
  dropbear answering (polled here every 0.2 s) to the bot's prompt reaching the Bot API;
- passphrase → the bot's acknowledgement: from the answer reaching the Bot API to the bot
  editing its prompt to "passphrase received"; the verdict's time is in the reboot test's
  "unlock" stage, next to a plain ``ssh -p <initrd port> root@guest cryptsetup-askpass`` fed
  the same passphrase on the first boot (connect, answer, verdict);
- the reboot test's stages as the bot reports them;
- an update (configuration ``good``): from ``/deploy`` to the job's "succeeded" (build in
  the bot's own store, ``nix copy``, the guard, the switch, the confirmation) next to the
  plain script on the same guest (configuration ``good2``: nothing of it built yet): ``nix
  build``, ``nix copy --to ssh://`` with the same pinned key, and ``ssh … nix-env --set …
  && …/bin/switch-to-configuration switch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import tempfile
import time
from pathlib import Path

from bot.remote import nix
from tests.fake_telegram import FakeMessage, FakeTelegram
from tests.vm import kvm, nixos
from tests.vm.control import Machine
from tests.vm.flavour_scripted import SCRIPTED
from tests.vm.guest import PASSPHRASE, cache_dir, image
from tests.vm.qemu import Guest, ssh_banner
from tests.vm.world import ENDED, JOB, PROMPT, VmWorld

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
            world.use_flake(root)
            world.machine("vm", machine, flake_attr="good", rollback_timeout="5m")
            await world.start()
            op = world.op
            await world.reboot_now()
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
            # The bot acknowledges the answer as it hands it over; the verdict's time is in
            # the report's "unlock" stage, next to the plain ssh's (connect, answer, verdict).
            lines.append(f"passphrase → the bot's acknowledgement: {relayed:.2f}s")
            report = await world.says(op, "Reboot test of vm passed", timeout=BOOT)
            lines.append("reboot test stages: " + report.body.splitlines()[1])
            await machine.wait_running(BOOT)
            lines += await _updates(world, machine, root)
        finally:
            with contextlib.suppress(Exception):
                await world.stop()
            guest.stop()
            await tg.stop()
    return lines


async def _updates(world: VmWorld, machine: Machine, root: Path) -> list[str]:
    """The bot's update next to the plain script's, on the same guest."""
    op, tg = world.op, world.tg
    start = time.monotonic()
    await world.confirm("/deploy vm", "Update vm")
    pressed = time.monotonic()

    def ended(message: FakeMessage) -> bool:
        head = message.body.split("\n")[0]
        return head.startswith("Update") and bool(ENDED.search(head))

    end = await tg.wait_for_message(op, ended, edits=True, since=0, timeout=JOB)
    done = time.monotonic()
    if "— succeeded after" not in end.body:
        raise RuntimeError(f"the bot's update did not succeed: {end.body}")
    bot = done - start
    plain = await _plain_update(world, machine, root)
    return [
        f"update by the bot (/deploy → succeeded): {bot:.1f}s "
        f"(question after {pressed - start:.1f}s; plain script: {plain:.1f}s; "
        f"ratio {bot / plain:.2f})"
    ]


async def _plain_update(world: VmWorld, machine: Machine, root: Path) -> float:
    """nix build + nix copy + ssh switch, as an operator's script does it."""
    words = shlex.split(world.env["DEPLOYBOT_NIX"])
    flake = world.env["DEPLOYBOT_FLAKE"]
    keys, port = machine.image.keys, machine.guest.ssh_port
    known = root / "plain-known_hosts"
    nix.write_known_hosts(known, machine.address, port, keys.system_public)
    options = nix.ssh_options(known_hosts=known, client_key=keys.bot, port=port)
    env = {**nix.child_env(), "NIX_SSHOPTS": options}
    start = time.monotonic()
    argv = nix.build_argv(words, flake=flake, attr="good2", outputs=("toplevel",))
    built = await nix.run_nix(argv, what="nix build", env=env, on_line=_quiet, timeout=JOB)
    (path,) = built.store_paths()
    argv = nix.copy_argv(words, user="root", host=machine.address, path=path)
    copied = await nix.run_nix(argv, what="nix copy", env=env, on_line=_quiet, timeout=JOB)
    if copied.code != 0:
        raise RuntimeError(f"nix copy failed: {copied.last}")
    switch = f"nix-env -p {nixos.PROFILE} --set {path} && {path}/bin/switch-to-configuration switch"
    ssh = await asyncio.create_subprocess_exec(
        "ssh", *options.split(), f"root@{machine.address}", switch, stdin=asyncio.subprocess.DEVNULL
    )
    if await ssh.wait() != 0:
        raise RuntimeError("the plain switch failed")
    return time.monotonic() - start


def _quiet(line: str) -> None:
    del line


def main() -> None:
    for line in asyncio.run(measure()):
        print(line)


if __name__ == "__main__":
    main()
