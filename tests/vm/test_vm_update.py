"""Updates behind the rollback guard on a real guest's systemd, through the fake Bot API with
a real ``deploybot run``: the real ``nix build`` (in the test's own store) and ``nix copy
--to ssh://`` into the guest's real store, real generations, the real ``systemd-run``
timer, and a configuration that really stops the guest's sshd (tests/vm/nixos.py)."""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path

from bot.remote import nix
from tests.vm import nixos
from tests.vm.conftest import BootGuest, booted
from tests.vm.control import Machine
from tests.vm.guest import Image
from tests.vm.world import JOB, VmWorld

GENERATIONS = "nix-env -p /nix/var/nix/profiles/system --list-generations"


async def current(machine: Machine) -> tuple[int, str]:
    """The profile's current generation and where /run/current-system points."""
    listing = await machine.run(GENERATIONS)
    (number,) = [int(line.split()[0]) for line in listing.splitlines() if "(current)" in line]
    return number, (await machine.run("readlink /run/current-system")).strip()


async def guards(machine: Machine) -> list[str]:
    timers = await machine.run("systemctl list-timers --all --no-legend")
    return [line for line in timers.splitlines() if "deploybot-rollback-" in line]


async def test_update_then_rollback_on_real_generations_and_timers(
    scripted_image: Image, boot: BootGuest, vm_world: VmWorld, tmp_path: Path
) -> None:
    machine = await booted(boot, scripted_image)
    installed = await current(machine)
    assert installed[0] == 1
    assert installed[1].endswith("-nixos-system-vmguest-installed")
    vm_world.use_flake(tmp_path)
    vm_world.machine("vm", machine, flake_attr="good", rollback_timeout="5m")
    await vm_world.start()

    asked = await vm_world.confirm("/deploy vm", "Update vm")
    assert f"Now: generation 1, {installed[1]}" in asked.body, asked.body
    assert "no reboot needed" in asked.body
    end = await vm_world.job_end(vm_world.op, 1)
    print(vm_world.tg.transcript(vm_world.op))
    assert "— succeeded after" in end.body, end.body
    assert "switched vm to generation 2" in end.body
    number, running = await current(machine)
    assert (number, running.endswith("-nixos-system-vmguest-good")) == (2, True)
    assert await guards(machine) == []
    assert (await machine.run("cat /run/current-system/nixos-version")).strip() == "good"

    asked = await vm_world.confirm("/rollback vm", "Roll back vm")
    assert "Then: generation 1" in asked.body, asked.body
    end = await vm_world.job_end(vm_world.op, 2)
    print(vm_world.tg.transcript(vm_world.op))
    assert "— succeeded after" in end.body, end.body
    assert await current(machine) == installed
    assert await guards(machine) == []


async def test_a_configuration_that_stops_sshd_is_switched_back_by_the_real_timer(
    scripted_image: Image, boot: BootGuest, vm_world: VmWorld, tmp_path: Path
) -> None:
    machine = await booted(boot, scripted_image)
    installed = await current(machine)
    vm_world.use_flake(tmp_path)
    vm_world.machine("vm", machine, flake_attr="nossh", rollback_timeout="90s")
    await vm_world.start()

    await vm_world.confirm("/deploy vm", "Update vm")
    end = await vm_world.job_end(vm_world.op, 1)
    print(vm_world.tg.transcript(vm_world.op))
    assert "— failed after" in end.body, end.body
    assert "rolled back to generation 1 because" in end.body, end.body
    assert await current(machine) == installed
    assert (await machine.run("systemctl is-active ssh.service")).strip() == "active"
    assert await guards(machine) == []
    journal = await machine.run("journalctl -b --no-pager -o cat -u 'deploybot-rollback-*'")
    assert "starting ssh.service" in journal, journal


async def test_the_guest_rolls_back_by_itself_when_the_bot_dies_in_the_guard_window(
    scripted_image: Image, boot: BootGuest, vm_world: VmWorld, tmp_path: Path
) -> None:
    machine = await booted(boot, scripted_image)
    installed = await current(machine)
    vm_world.use_flake(tmp_path)
    vm_world.machine("vm", machine, flake_attr="good", rollback_timeout="60s")
    bot = await vm_world.start()

    await vm_world.confirm("/deploy vm", "Update vm")
    # SIGKILL as soon as the guard is armed on the guest: before the bot confirms.
    async with await machine.connect() as conn:
        deadline = time.monotonic() + JOB
        while time.monotonic() < deadline:
            timers = await conn.run("systemctl list-timers --all --no-legend", check=False)
            if "deploybot-rollback-1.timer" in str(timers.stdout):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the guard was never armed")
    await bot.kill()
    vm_world.bot = None
    assert (await current(machine))[0] == 2 or await guards(machine)

    deadline = time.monotonic() + 300
    while await current(machine) != installed or await guards(machine):
        assert time.monotonic() < deadline, await machine.run(GENERATIONS)
        await asyncio.sleep(2)
    assert (await machine.run("systemctl is-active ssh.service")).strip() == "active"


async def test_nix_copy_with_the_pinned_key_and_refused_with_another(
    scripted_image: Image, boot: BootGuest, tmp_path: Path
) -> None:
    """The bot's own copy argv and NIX_SSHOPTS (bot.remote.nix) with the real nix and ssh."""
    machine = await booted(boot, scripted_image)
    words = nixos.bot_nix(tmp_path / "bot-store")
    flake = nixos.write_flake(tmp_path / "flake")
    lines: list[str] = []
    env = nix.child_env()
    argv = nix.build_argv(shlex.split(words), flake=flake, attr="good", outputs=("toplevel",))
    built = await nix.run_nix(argv, what="nix build", env=env, on_line=lines.append, timeout=300)
    (path,) = built.store_paths()
    keys = scripted_image.keys

    async def copy(pinned: str) -> nix.Finished:
        known = tmp_path / "known_hosts"
        nix.write_known_hosts(known, machine.address, machine.guest.ssh_port, pinned)
        env["NIX_SSHOPTS"] = nix.ssh_options(
            known_hosts=known, client_key=keys.bot, port=machine.guest.ssh_port
        )
        argv = nix.copy_argv(shlex.split(words), user="root", host=machine.address, path=path)
        return await nix.run_nix(argv, what="nix copy", env=env, on_line=print, timeout=300)

    refused = await copy(keys.initrd_public)  # a key of the lab's, not this server's
    assert refused.code != 0
    assert any("Host key verification failed" in line for line in refused.lines), refused.lines
    assert "invalid" in await machine.run(f"nix-store --check-validity {path} || echo invalid")
    done = await copy(keys.system_public)
    assert done.code == 0, done.lines
    await machine.run(f"nix-store --check-validity {path}")
