"""The install against the real script's ways: a target swapped after the key check, steps
that never end, the progress line, and keys that leave as soon as nixos-anywhere exits."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from tests.botrig import BotRig
from tests.lab import Lab, LabHost
from tests.waiting import eventually
from tests.world import World, make_world

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def held(rig: BotRig, lab: Lab, tmp_path: Path) -> World:
    """A world whose stand-in waits before its first ssh until the test releases it."""
    return make_world(lab, rig, tmp_path, nixos_anywhere={"hold": True})


def _untouched(host: LabHost) -> None:
    """Nothing was written to the target: no disk key, no format, no files, no system."""
    assert not (host.paths.ram / "tmp" / "disk.key").exists()
    assert not host.state.formatted
    assert host.state.installed_system is None
    assert not any(host.root.iterdir())


def _processes(needle: str, lab: Lab) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            if needle.encode() in argv and str(lab.dir).encode() in argv and state != "Z":
                found.append(int(proc.name))
    return found


def _gone(path: str) -> bool:
    return not Path(path).exists()


async def _true(value: bool) -> bool:
    return value


async def test_a_target_swapped_after_the_key_check_is_left_untouched(held: World) -> None:
    world, lab = held, held.lab
    host = lab.start_host("target", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op = world.op
    await world.confirm_deploy(op, "clawsiecats")
    await eventually(lambda: _true(lab.stand_in_waiting()), what="the stand-in's first ssh")
    host.reboot()  # another machine, another key, at the same address
    await host.wait_for_stage("installer")
    lab.release_stand_ins()
    end = await world.job_end(op, timeout=60)
    assert "— failed after" in end.body
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in end.body
    assert "nothing was written" in end.body
    assert "/deploy clawsiecats again" in end.body
    _untouched(host)
    (run,) = lab.stand_ins()
    assert _gone(run["tmp"]), "stopped with SIGTERM: its key copy is gone"
    assert not world.stand_ins(living=True)
    # The confirmed key went to nixos-anywhere in a 0600 file beside the staging folder.
    assert not list((world.root / "state" / "staging").iterdir())


async def test_a_target_swapped_during_the_build_is_caught_before_nixos_anywhere(
    rig: BotRig, lab: Lab, tmp_path: Path
) -> None:
    world = make_world(lab, rig, tmp_path, nix_build_delay=1.5)
    host = lab.start_host("target", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    await eventually(
        lambda: _true(bool(_processes("nix.py", lab))), what="the build", interval=0.01
    )
    host.reboot()
    await host.wait_for_stage("installer")
    end = await world.job_end(world.op, timeout=60)
    assert "changed since you confirmed" in end.body, end.body
    assert "Nothing was installed" in end.body
    assert lab.stand_ins() == [], "nixos-anywhere never started"
    _untouched(host)


async def test_ssh_copy_id_retrying_for_ever_is_stopped_and_the_key_copy_removed(
    held: World,
) -> None:
    world, lab = held, held.lab
    host = lab.start_host("gone", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start(step_timeouts={"upload keys": 1.5}, stop_grace=5.0)
    op = world.op
    await world.confirm_deploy(op, "clawsiecats")
    await eventually(lambda: _true(lab.stand_in_waiting()), what="the stand-in's first ssh")
    host.power_off()
    lab.release_stand_ins()
    released = time.monotonic()
    end = await world.job_end(op, timeout=60)
    took = time.monotonic() - released
    print(f"stalled ssh-copy-id stopped {took:.2f} s after release (bound 1.5 s)")
    assert 'stalled at "Uploading install SSH keys"' in end.body, end.body
    assert "it was stopped" in end.body
    (run,) = lab.stand_ins()
    assert _gone(run["tmp"]), "the EXIT trap removed its copy of the key"
    assert not world.stand_ins(living=True)
    assert took < 1.5 + 5.0 + 3.0


async def test_a_reboot_that_never_happens_is_a_stall_at_the_reboot_wait(world: World) -> None:
    host = world.lab.start_host("stuck", luks=False)
    host.reboot_script_delay = 3600.0
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start(step_timeouts={"reboot": 2.0}, stop_grace=5.0)
    await world.confirm_deploy(world.op, "clawsiecats")
    end = await world.job_end(world.op, timeout=60)
    assert 'stalled at "Waiting for the machine to become unreachable due to reboot"' in end.body
    (run,) = world.lab.stand_ins()
    assert _gone(run["tmp"])


async def test_progress_shows_the_running_step_and_its_time_not_ssh_noise(world: World) -> None:
    host = world.lab.start_host("slow", luks=False)
    host.hang_at("install")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start(step_timeouts={"install": 4.0}, progress_interval=0.3, stop_grace=5.0)
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    step = "› nixos-anywhere: Uploading the system closure ("
    shown = await tg.wait_for_message(op, lambda m: step in m.body, edits=True, timeout=30)
    first = shown.body
    await tg.wait_until(lambda: shown.body != first and step in shown.body, timeout=10)
    end = await world.job_end(op, timeout=60)
    assert 'stalled at "Uploading the system closure"' in end.body
    everything = "\n".join([*(r.text or "" for r in shown.history), shown.body])
    assert len(shown.history) >= 2
    assert "Warning:" not in everything
    assert "Pseudo-terminal" not in everything


async def test_staging_keys_are_removed_when_nixos_anywhere_exits(world: World) -> None:
    host = world.lab.start_host("luks", luks=True)
    world.machine("clawsiecats", host)
    await world.start()
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    await world.answer_secret(op, "New disk passphrase for clawsiecats", PASSPHRASE)
    await world.answer_secret(op, "again", PASSPHRASE)
    await tg.wait_for_message(op, lambda m: "waiting for its disk passphrase" in m.body, timeout=30)
    # Waiting in the initrd: the job goes on, the host's and initrd's private keys are gone.
    staging = world.root / "state" / "staging"
    assert not list(staging.iterdir()), list(staging.iterdir())
    assert await world.rig.svc.store.active_job("clawsiecats") is not None
    await tg.send_text(op, PASSPHRASE)
    end = await world.job_end(op)
    assert "✅ unlocked by @opal" in end.body
