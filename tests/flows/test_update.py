"""/deploy of an installed machine and /rollback: the real bot over the fake Bot API,
updating lab hosts behind the rollback guard that lives on the host."""

from __future__ import annotations

import asyncio
import shlex
import subprocess

import pytest

from tests.flows.updating import ATTR, confirm_update, installed, job_end
from tests.world import World


async def test_update_switches_and_disarms_the_guard(world: World) -> None:
    host = await installed(world)
    old = host.current_system
    world.lab.set_configuration(world.flake, ATTR, version="2")
    confirmation = await confirm_update(world, world.op)
    assert "Its disks are not touched" in confirmation.body
    assert f"Now: generation 1, {old}" in confirmation.body
    assert "no reboot needed" in confirmation.body
    end = await job_end(world, world.op)
    assert "— succeeded after" in end.body, end.body
    assert "switched clawsiecats to generation 2" in end.body
    assert host.current_generation == 2
    assert host.current_system != old
    assert host.current_system is not None
    assert host.current_system in end.body
    assert host.timers == [], "the guard was disarmed"
    assert host.activations[-1].unit == "deploybot-switch-1.service"
    assert not [m for m in world.rig.tg.bot_messages(world.op) if "Reboot now" in str(m.buttons)]


async def test_a_confirmed_update_unloads_guards_an_interrupted_job_left(world: World) -> None:
    """A guard armed without RemainAfterElapse=no (an older bot whose job was cut) stays
    loaded once it fired, as real systemd keeps it; the next confirmed update unloads it."""
    host = await installed(world)
    old_guard = ["systemd-run", "--unit=deploybot-rollback-99", "--on-active=1s"]
    stale = shlex.join([*old_guard, "--timer-property=AccuracySec=1s", "true"])
    made = await asyncio.to_thread(
        subprocess.run, [*world.lab.ssh_argv(host), stale], capture_output=True, timeout=30
    )
    assert made.returncode == 0, made.stderr
    await host.wait_until(
        lambda: [t.state for t in host.timers] == ["elapsed"], timeout=10, what="it fired"
    )
    world.lab.set_configuration(world.flake, ATTR, version="2")
    await confirm_update(world, world.op)
    end = await job_end(world, world.op)
    assert "— succeeded after" in end.body, end.body
    assert host.timers == [], "the elapsed guard of job 99 was unloaded"


async def test_a_unit_failing_before_the_update_does_not_roll_it_back(world: World) -> None:
    host = await installed(world)
    host.set_failed_units(["backup.service"])
    world.lab.set_configuration(world.flake, ATTR, version="2")
    await confirm_update(world, world.op)
    end = await job_end(world, world.op)
    assert "— succeeded after" in end.body, end.body
    assert "system degraded, failed: backup.service" in end.body
    assert host.current_generation == 2
    assert host.timers == [], "the guard was disarmed"


async def test_a_failed_activation_is_rolled_back_at_once(world: World) -> None:
    """switch-to-configuration exits non-zero: the guard's service is started now, not when
    its timer ends (300 s here; the job must end long before)."""
    host = await installed(world, rollback_timeout="300s")
    old = host.current_system
    world.lab.set_configuration(world.flake, ATTR, breaks_ssh=True)
    await confirm_update(world, world.op)
    end = await job_end(world, world.op, timeout=90)
    assert "— failed after" in end.body
    assert (
        "rolled back to generation 1 because the activation failed (exit 4: warning: the "
        "following units failed: sshd.service); I started the rollback at once" in end.body
    ), end.body
    assert host.current_system == old
    assert host.current_generation == 1
    assert not host.sshd_broken
    assert [a.unit for a in host.activations[-2:]] == [
        "deploybot-switch-1.service",
        "deploybot-rollback-1.service",
    ]
    assert host.timers == [], "the fired timer was unloaded"
    tg = world.rig.tg
    await tg.wait_until(lambda: tg.documents_in(world.op), what="the job log")
    log = tg.documents_in(world.op)[-1].document
    assert log is not None
    assert b"stopping the following units: sshd.service" in log.data
    assert b"is back on generation 1" in log.data
    audit = await world.rig.svc.store.recent_audit(50)
    assert {"not confirmed", "rolled back"} <= {a.decision for a in audit}


async def test_an_unreachable_new_system_is_rolled_back_by_the_machine(world: World) -> None:
    """The activation succeeds but no login reaches the new system (a firewall shut port
    22): nothing confirms it, and the machine's timer switches back by itself."""
    host = await installed(world, rollback_timeout="3s")
    old = host.current_system
    world.lab.set_configuration(world.flake, ATTR, blocks_ssh=True)
    await confirm_update(world, world.op)
    end = await job_end(world, world.op, timeout=90)
    assert "— failed after" in end.body
    assert "rolled back to generation 1 because no pinned login succeeded" in end.body, end.body
    assert "within 3.0 s of the activation" in end.body
    assert host.current_system == old
    assert host.current_generation == 1
    assert not host.sshd_broken
    assert [a.unit for a in host.activations[-2:]] == [
        "deploybot-switch-1.service",
        "deploybot-rollback-1.service",
    ]
    assert host.timers == [], "the fired timer was unloaded"


async def test_build_failure_changes_nothing(world: World) -> None:
    host = await installed(world)
    old = host.current_system
    world.lab.set_configuration(world.flake, ATTR, fails=True)
    await world.rig.tg.send_text(world.op, "/deploy clawsiecats")
    end = await job_end(world, world.op)
    assert "❌ failed at build: the build failed: error: 1 dependencies of derivation" in end.body
    assert "Nothing changed on clawsiecats" in end.body
    assert not [m for m in world.rig.tg.bot_messages(world.op) if m.buttons]
    assert host.current_system == old
    assert [g.number for g in host.generations] == [1]
    assert host.timers == []


async def test_kernel_change_offers_a_reboot_through_the_unlock(world: World) -> None:
    host = await installed(
        world, luks=True, luks_passphrase_secret="clawsiecats_luks_passphrase", auto_unlock=False
    )
    world.lab.set_configuration(world.flake, ATTR, kernel="6.12.34")
    confirmation = await confirm_update(world, world.op)
    assert "kernel, initrd, kernel-modules change: a reboot is needed" in confirmation.body
    end = await job_end(world, world.op)
    assert "— succeeded after" in end.body, end.body
    assert "reboot to use them" in end.body
    tg, op = world.rig.tg, world.op
    offer = await tg.wait_for_message(op, lambda m: "Reboot it now" in m.body, since=0, timeout=30)
    assert "through the unlock of its disk" in offer.body
    new = host.current_system
    await tg.press_button(op, offer, "Reboot now")
    prompt = await tg.wait_for_message(
        op, lambda m: "waiting for its disk passphrase" in m.body, since=0, timeout=30
    )
    assert prompt is not None
    assert host.luks_passphrase is not None
    await tg.send_text(op, host.luks_passphrase)
    passed = await tg.wait_for_message(
        op, lambda m: "Reboot test of clawsiecats passed" in m.body, since=0, timeout=60
    )
    assert passed is not None
    assert host.booted_system == host.current_system == new


async def test_rollback_goes_to_the_previous_generation_behind_the_guard(world: World) -> None:
    host = await installed(world)
    first = host.current_system
    world.lab.set_configuration(world.flake, ATTR, version="2")
    await confirm_update(world, world.op)
    assert "— succeeded after" in (await job_end(world, world.op)).body
    confirmation = await confirm_update(
        world, world.op, command="/rollback clawsiecats", press="Roll back clawsiecats"
    )
    assert "Roll back clawsiecats?" in confirmation.body
    assert f"Then: generation 1, {first}" in confirmation.body
    end = await job_end(world, world.op, job=2)
    assert "Rollback clawsiecats (job 2) — succeeded" in end.body, end.body
    assert host.current_system == first
    assert host.current_generation == 1
    assert [g.number for g in host.generations] == [1, 2]
    assert host.timers == []
    assert host.activations[-1].unit == "deploybot-switch-2.service"
    none = await world.rig.ask(world.op, "/rollback clawsiecats")
    assert none.body.startswith("Rollback clawsiecats (job 3)")
    nothing = await job_end(world, world.op, job=3)
    assert "no generation older than the current one (1)" in nothing.body, nothing.body


async def test_update_is_refused_in_the_initrd_and_while_a_job_runs(world: World) -> None:
    host = await installed(world, luks=True)
    world.lab.set_configuration(world.flake, ATTR, version="2", build_seconds=30.0)
    await world.rig.tg.send_text(world.op, "/deploy clawsiecats")
    await world.rig.tg.wait_for_message(
        world.op, lambda m: "▶️ build" in m.body, edits=True, since=0, timeout=20
    )
    busy = await world.rig.ask(world.op, "/deploy clawsiecats")
    assert busy.body.startswith("clawsiecats already has job 1 (update, running, at build)")
    cancelled = await world.rig.ask(world.op, "/cancel 1")
    assert cancelled.body == "Job 1 cancelled; its processes were stopped."
    end = await job_end(world, world.op)
    assert "— cancelled after" in end.body
    assert [g.number for g in host.generations] == [1]
    host.reboot()
    await host.wait_for_stage("initrd", timeout=10)
    refused = await world.rig.ask(world.op, "/deploy clawsiecats")
    assert refused.body.startswith("clawsiecats waits in its initrd for its disk passphrase")
    assert "/unlock clawsiecats first" in refused.body
    audit = await world.rig.svc.store.recent_audit(50)
    assert "refused" in {a.decision for a in audit if a.action == "deploy"}


async def test_cancel_in_the_guard_window_leaves_it_to_the_guard(world: World) -> None:
    host = await installed(world, rollback_timeout="4s")
    old = host.current_system
    world.lab.set_configuration(world.flake, ATTR, blocks_ssh=True)
    await confirm_update(world, world.op)
    tg = world.rig.tg
    await tg.wait_for_message(world.op, lambda m: "▶️ confirm" in m.body, edits=True, since=0)
    answer = await world.rig.ask(world.op, "/cancel 1")
    assert answer.body.startswith("Job 1 goes on: the rollback guard on clawsiecats decides now")
    end = await job_end(world, world.op, timeout=90)
    assert "rolled back to generation 1" in end.body
    assert host.current_system == old


@pytest.mark.parametrize(
    ("cut_after", "said"),
    [
        ("nix-env -p /nix/var/nix/profiles/system --set", "put the profile back on generation 1"),
        (
            "systemd-run --unit=deploybot-rollback-1",
            "stopped the guard it had armed and put the profile back on generation 1",
        ),
    ],
)
async def test_a_select_cut_by_a_dropped_connection_is_undone(
    world: World, cut_after: str, said: str
) -> None:
    """The check-select-arm line dies half-way: a fresh login looks and puts the profile
    back (and stops the guard) instead of leaving a selected, unguarded generation."""
    host = await installed(world, rollback_timeout="300s")
    old = host.current_system
    world.lab.set_configuration(world.flake, ATTR, version="2")
    host.cut_connection_after(cut_after)
    await confirm_update(world, world.op)
    end = await job_end(world, world.op)
    assert host.current_generation == 1, "the profile is back on the recorded generation"
    assert host.timers == []
    assert host.current_system == old
    assert "❌ failed at activate: cannot activate on clawsiecats: the connection dropped" in (
        end.body
    ), end.body
    assert f"a fresh login looked: {said}. Nothing was activated" in end.body, end.body
    assert all(a.unit != "deploybot-switch-1.service" for a in host.activations)


async def test_a_machine_changed_during_the_review_is_not_activated(world: World) -> None:
    host = await installed(world)
    old = host.current_system
    assert old is not None
    world.lab.set_configuration(world.flake, ATTR, version="2")
    tg = world.rig.tg
    await tg.send_text(world.op, "/deploy clawsiecats")
    confirmation = await tg.wait_for_message(world.op, lambda m: bool(m.buttons), timeout=30)
    # Someone else makes a generation while the confirmation waits.
    other = await asyncio.to_thread(
        subprocess.run,
        [*world.lab.ssh_argv(host), f"nix-env -p /nix/var/nix/profiles/system --set {old}"],
        capture_output=True,
        timeout=30,
    )
    assert other.returncode == 0, other.stderr
    await tg.press_button(world.op, confirmation, "Update clawsiecats")
    end = await job_end(world, world.op)
    assert (
        "❌ failed at activate: clawsiecats changed since you confirmed (generation 2" in end.body
    )
    assert "nothing was activated" in end.body
    assert host.current_generation == 2, "the profile is back where the other change left it"
    assert host.current_system == old
    assert host.timers == []
    assert all(a.unit != "deploybot-switch-1.service" for a in host.activations)
