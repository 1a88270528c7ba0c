"""Update scenarios' common steps: a lab host installed as the bot installs it, the
update's confirmation pressed, the job's final progress message."""

from __future__ import annotations

import re

from tests.fake_telegram import ChatRef, FakeMessage, FakeUser
from tests.lab.host import LabHost
from tests.world import World

ATTR = "clawsiecats"
ENDED = re.compile(r"^(Update|Rollback) .* — (succeeded|failed|cancelled|interrupted) after")


async def installed(
    world: World, name: str = "upd", *, luks: bool = False, **keys: object
) -> LabHost:
    """A booted host running the flake's ``clawsiecats`` as installed, the bot pinned to it."""
    host = world.lab.start_installed_host(name, stage="booted", luks=luks, flake_attr=ATTR)
    world.machine("clawsiecats", host, luks=luks, flake_attr=ATTR, **keys)
    await world.start()
    await world.pin("clawsiecats", host, initrd=luks)
    return host


async def confirm_update(
    world: World,
    user: FakeUser,
    *,
    command: str = "/deploy clawsiecats",
    press: str = "Update clawsiecats",
) -> FakeMessage:
    tg = world.rig.tg
    await tg.send_text(user, command)
    confirmation = await tg.wait_for_message(user, lambda m: bool(m.buttons), timeout=30)
    await tg.press_button(user, confirmation, press)
    return confirmation


async def job_end(world: World, chat: ChatRef, *, job: int = 1, timeout: float = 60) -> FakeMessage:
    """Job ``job``'s progress message once it shows a final result."""

    def ended(message: FakeMessage) -> bool:
        head = message.body.split("\n")[0]
        return f"(job {job})" in head and bool(ENDED.search(head))

    return await world.rig.tg.wait_for_message(chat, ended, edits=True, since=0, timeout=timeout)
