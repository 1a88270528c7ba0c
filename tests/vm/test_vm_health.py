"""Health probes against a real booted guest: systemd's own verdict on a failed unit, a
really full ext4 root, and the probe's kept login across a real sshd restart."""

from __future__ import annotations

import re

from tests.fake_telegram import FakeMessage
from tests.vm.conftest import BootGuest
from tests.vm.control import Machine
from tests.vm.guest import Image
from tests.vm.world import VmWorld

BOOT = 600.0


async def _booted(boot: BootGuest, image: Image) -> Machine:
    machine = await boot(image)
    await machine.wait_initrd(BOOT)
    await machine.unlock_by_hand()
    await machine.wait_system(BOOT)
    await machine.wait_running(BOOT)
    return machine


async def check(world: VmWorld) -> FakeMessage:
    """``/check vm``: the bot says "Checking vm…", then posts the verdict."""
    said = await world.rig.ask(world.op, "/check vm", timeout=120)
    assert said.body == "Checking vm…", said.body
    return await world.says(world.op, "healthy", timeout=120)


async def test_check_sees_a_real_failed_unit_and_a_real_full_disk(
    scripted_image: Image, boot: BootGuest, vm_world: VmWorld
) -> None:
    machine = await _booted(boot, scripted_image)
    vm_world.machine("vm", machine)
    await vm_world.start()
    op, tg = vm_world.op, vm_world.tg
    healthy = await check(vm_world)
    assert healthy.body.startswith("vm: ✅ healthy: system running"), healthy.body

    await machine.run(
        "systemd-run --unit=vm-lab-broken --service-type=oneshot /bin/false", check=False
    )
    assert (await machine.run("systemctl is-system-running", check=False)).strip() == "degraded"
    # Fill the root to the last block, as a runaway log would (fallocate: no slow writes).
    await machine.run(
        "fallocate -l $(( $(df --output=avail -B1 / | tail -n1) - 4096 )) /var/tmp/filler"
    )
    sick = await check(vm_world)
    print(tg.transcript(op))
    assert sick.body.startswith("vm: ⚠️ unhealthy: system degraded"), sick.body
    assert "vm-lab-broken.service" in sick.body
    assert re.search(r", / (99|100)%", sick.body), sick.body
