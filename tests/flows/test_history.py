"""/history: a lab machine's profile, listed over a pinned login and paged under the limit."""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.core.telegram_limits import MAX_TEXT
from tests.fake_telegram import FakeMessage
from tests.lab import generations as gen
from tests.lab.generations import LabConfig
from tests.people import OTHER_OPERATOR
from tests.world import World

KEEP = 60  # generations added to the one of the install


def turned_to(first: FakeMessage, page: int) -> Callable[[FakeMessage], bool]:
    return lambda m: m.message_id == first.message_id and f"page {page} of" in m.body


async def test_a_long_profile_is_listed_newest_first_in_pages(world: World) -> None:
    host = world.lab.start_installed_host("hist", stage="booted", luks=False)
    kernels = ["6.12.33", "6.13.2", "6.14.1"]
    paths = []
    for i in range(KEEP):
        built = gen.closure("hist", LabConfig(version=str(i + 2), kernel=kernels[i // 25]))
        gen.materialise(host.root, built)
        gen.set_profile(host.root, built.toplevel)
        paths.append(built.toplevel)
    gen.switch_generation(host.root, KEEP)  # the current one is not the newest
    world.machine("web", host, luks=False)
    await world.start()
    await world.pin("web", host, initrd=False)
    tg, op = world.rig.tg, world.op

    await tg.send_text(op, "/history web")
    first = await tg.wait_for_message(op, lambda m: "generations, newest first" in m.body)
    pages = [first.body]
    message: FakeMessage = first
    while any(b.get("text") == "›" for row in message.buttons for b in row):
        await tg.press_button(op, message, "›")
        message = await tg.wait_for_message(op, turned_to(first, len(pages) + 1), edits=True)
        pages.append(message.body)
    assert len(pages) > 1, "a long profile is paged"
    assert all(0 < len(p) <= MAX_TEXT for p in pages)
    assert all(p.startswith(f"web: {KEEP + 1} generations, newest first\n") for p in pages)
    text = "\n".join(pages)
    listed = [int(n) for n in re.findall(r"^• (\d+)", text, re.MULTILINE)]
    assert listed == list(range(KEEP + 1, 0, -1))
    assert f"• {KEEP} (current) · " in text
    assert text.count("(current)") == 1
    for number, path, kernel in ((KEEP + 1, paths[-1], "6.14.1"), (2, paths[0], "6.12.33")):
        line = rf"^• {number}(?: \(current\))? · \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d$"
        found = re.search(line + r"\n  (\S+)\n  kernel (\S+)$", text, re.MULTILINE)
        assert found is not None, number
        assert found.groups() == (path, f"linux-{kernel}")
    assert re.search(r"^• 1 · .*\n  /nix/store/\S+-nixos-system-hist-\S+\n", text, re.MULTILINE)
    assert "kernel linux-6.14.1" in pages[0]
    assert "kernel linux-6.12.33" in pages[-1]


async def test_history_needs_an_operator_and_a_pinned_key(world: World) -> None:
    host = world.lab.start_installed_host("hist", stage="booted", luks=False)
    world.machine("web", host, luks=False, host_key_secret="", secrets_file="")
    other = world.lab.start_installed_host("other", stage="booted", luks=False)
    world.machine("theirs", other, luks=False, operators=[OTHER_OPERATOR])
    await world.start()
    tg, op = world.rig.tg, world.op
    unpinned = await world.rig.ask(op, "/history web")
    assert unpinned.body.startswith("web has no pinned host key")
    refused = await world.rig.ask(tg.user(OTHER_OPERATOR, "otto"), "/history web")
    assert refused.body == "You may not act on 'web': it is unknown or not one of yours."


async def test_what_the_profile_says_is_shown_printable(world: World) -> None:
    """A generation link (or a kernel link) is the machine's to write: escapes and bidi
    overrides in it reach the chat stripped, and a long one cut."""
    host = world.lab.start_installed_host("hist", stage="booted", luks=False)
    hostile = "/nix/store/" + "a" * 32 + "-evil\x1b[2J\u202eeulav" + "x" * 180
    gen.set_profile(host.root, hostile)
    world.machine("web", host, luks=False)
    await world.start()
    await world.pin("web", host, initrd=False)
    answer = await world.rig.ask(world.op, "/history web")
    assert answer.body.startswith("web: 2 generations, newest first")
    assert "\x1b" not in answer.body
    assert "\u202e" not in answer.body
    shown = next(line for line in answer.body.splitlines() if "-evil" in line)
    assert shown.startswith("  /nix/store/")
    assert shown.endswith("…")
    assert len(shown) <= 2 + 200
    assert "• 2 (current)" in answer.body
    assert "kernel no kernel link" in answer.body
