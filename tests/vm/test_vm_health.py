"""Health probes against a real booted guest: systemd's own verdict on a failed unit, a
really full ext4 root, and the probe's kept login across a real sshd restart."""

from __future__ import annotations

import re

from tests.fake_telegram import FakeMessage
from tests.vm.conftest import BootGuest, booted
from tests.vm.control import Machine
from tests.vm.guest import Image
from tests.vm.world import BOOT, VmWorld


async def check(world: VmWorld) -> FakeMessage:
    """``/check vm``: the bot says "Checking vm…", then posts the verdict."""
    said = await world.rig.ask(world.op, "/check vm", timeout=120)
    assert said.body == "Checking vm…", said.body
    return await world.says(world.op, "healthy", timeout=120)


async def test_check_sees_a_real_failed_unit_and_a_real_full_disk(
    scripted_image: Image, boot: BootGuest, vm_world: VmWorld
) -> None:
    machine = await booted(boot, scripted_image)
    vm_world.machine("vm", machine)
    await vm_world.start()
    op, tg = vm_world.op, vm_world.tg
    healthy = await check(vm_world)
    assert healthy.body.startswith("vm: ✅ healthy: system running"), healthy.body
    kept = await bots_logins(machine)
    assert len(kept) == 1, kept  # the probe's login, held between probes

    # A real sshd restart (KillMode=process, as on NixOS): logins made before it stay.
    await machine.run("systemctl restart ssh.service")
    await machine.wait_system(BOOT)
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
    # The second check went over the login made before the restart: no new one.
    assert await bots_logins(machine) == kept


async def bots_logins(machine: Machine) -> set[str]:
    """The peers of the system's established SSH connections, this test's own left out."""
    said = await machine.run("echo $SSH_CONNECTION; ss -Htn state established '( sport = :22 )'")
    own, *rows = said.splitlines()
    ours = "{}:{}".format(*own.split()[:2])
    return {row.split()[-1] for row in rows if row.split()} - {ours}
