"""Unlocking and reboot tests against a real guest, through the fake Bot API with a real
``deploybot run`` process: the guest's own initramfs asks, its real cryptsetup judges."""

from __future__ import annotations

from bot.core.keys import fingerprint
from tests.vm.conftest import BootGuest, booted
from tests.vm.guest import PASSPHRASE, Image
from tests.vm.world import BOOT, PROMPT, STAGES, VmWorld, stage_times

WRONG = "not the disk passphrase"


async def test_wrong_then_right_passphrase_from_the_chat_opens_the_real_root(
    scripted_image: Image, boot: BootGuest, vm_world: VmWorld
) -> None:
    machine = await boot(scripted_image)
    await machine.wait_initrd(BOOT)
    vm_world.machine("vm", machine)
    await vm_world.start()
    op, tg = vm_world.op, vm_world.tg

    await tg.send_text(op, "/unlock vm")
    prompt = await vm_world.says(op, PROMPT, timeout=120)
    assert f"initrd key {fingerprint(scripted_image.keys.initrd_public)} verified" in prompt.body
    wrong = await tg.send_text(op, WRONG, reply_to=prompt)
    again = await vm_world.says(op, "attempt 2 of 3", timeout=180)
    assert again.body.startswith("❌ wrong passphrase, attempt 2 of 3."), again.body
    right = await tg.send_text(op, PASSPHRASE, reply_to=again)
    done = await vm_world.says(op, "unlocked by @opal", timeout=BOOT)
    print(tg.transcript(op))

    assert done.body.startswith("🔓 vm unlocked by @opal, up after "), done.body
    assert tg.is_deleted(op, wrong.message_id)
    assert tg.is_deleted(op, right.message_id)
    assert (await machine.run("findmnt -no SOURCE /")).strip() == "/dev/mapper/root"
    # The guest's own journal of the initramfs's verdicts is not reachable any more; its
    # LUKS header says a volume is open with the one key slot.
    assert "type:    LUKS2" in await machine.run("cryptsetup status root")


async def test_reboot_test_on_demand_goes_through_the_real_initramfs(
    scripted_image: Image, boot: BootGuest, vm_world: VmWorld
) -> None:
    machine = await booted(boot, scripted_image, BOOT)
    before = await machine.boot_id()
    vm_world.machine("vm", machine)
    await vm_world.start()
    op, tg = vm_world.op, vm_world.tg

    await vm_world.reboot_now()
    answer = await vm_world.answer(op, PASSPHRASE, timeout=BOOT)
    report = await vm_world.says(op, "Reboot test of vm passed", timeout=BOOT)
    print(tg.transcript(op))

    assert stage_times(report) == STAGES
    assert tg.is_deleted(op, answer.message_id)
    assert await machine.boot_id() != before
    assert not [m for m in tg.bot_messages(op) if "🚨" in m.body or "unexpectedly" in m.body]


async def test_scheduled_reboot_test_fires_from_its_cron_and_passes(
    scripted_image: Image, boot: BootGuest, vm_world: VmWorld
) -> None:
    machine = await booted(boot, scripted_image, BOOT)
    before = await machine.boot_id()
    # Every minute: the real scheduler in the real process starts it within a minute.
    vm_world.machine("vm", machine, reboot_check="* * * * *")
    await vm_world.start()
    op, tg = vm_world.op, vm_world.tg

    answer = await vm_world.answer(op, PASSPHRASE, timeout=BOOT)
    report = await vm_world.says(op, "Reboot test of vm passed", timeout=BOOT)
    print(tg.transcript(op))
    assert "scheduled" in report.body
    assert stage_times(report) == STAGES
    assert tg.is_deleted(op, answer.message_id)
    assert await machine.boot_id() != before
