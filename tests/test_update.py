"""/deploy of an installed machine and /rollback: the real bot over the fake Bot API,
updating lab hosts behind the rollback guard that lives on the host."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fake_telegram import ChatRef, FakeMessage, FakeUser
from tests.lab.host import LabHost
from tests.waiting import eventually
from tests.world import World

ATTR = "clawsiecats"
ENDED = re.compile(r"^(Update|Rollback) .* — (succeeded|failed|cancelled|interrupted) after")


async def installed(world: World, name: str = "upd", *, luks: bool = False, **keys: object) -> LabHost:
    """A booted host running the flake's ``clawsiecats`` as installed, the bot pinned to it."""
    host = world.lab.start_installed_host(name, stage="booted", luks=luks, flake_attr=ATTR)
    world.machine("clawsiecats", host, luks=luks, flake_attr=ATTR, **keys)
    await world.start()
    await world.pin("clawsiecats", host, initrd=luks)
    return host


async def confirm_update(world: World, user: FakeUser, *, command: str = "/deploy clawsiecats",
                         press: str = "Update clawsiecats") -> FakeMessage:
    tg = world.rig.tg
    await tg.send_text(user, command)
    confirmation = await tg.wait_for_message(user, lambda m: bool(m.buttons), timeout=30)
    await tg.press_button(user, confirmation, press)
    return confirmation


async def job_end(world: World, chat: ChatRef, *, timeout: float = 60) -> FakeMessage:
    return await world.rig.tg.wait_for_message(
        chat, lambda m: bool(ENDED.search(m.body.split("\n")[0])), edits=True, since=0,
        timeout=timeout,
    )


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
    assert host.current_system in end.body
    assert host.timers == [], "the guard was disarmed"
    assert host.activations[-1].unit == "deploybot-switch-1.service"
    assert not [m for m in world.rig.tg.bot_messages(world.op) if "Reboot now" in str(m.buttons)]
