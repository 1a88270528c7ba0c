"""A fleet of hundreds: every list answers within Telegram's limits, in pages only the asker
turns. The fake Bot API refuses over-long texts, so an answer that was cut or too long
fails here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from bot.chat.pages import PREFIX, Turn, Views, split_pages
from bot.core.telegram_limits import MAX_TEXT
from tests.botrig import BotRig
from tests.fake_telegram import FakeMessage, FakeTelegram, FakeUser
from tests.people import ADMIN, OPERATOR, STRANGER
from tests.waiting import eventually

FLEET = 300
UP = 10  # machines that answer on their SSH port and were last seen up


def address(i: int) -> str:
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def inventory(up_ports: list[int]) -> str:
    """300 machines on loopback: nothing listens on port 1, so their probes fail at once."""
    return "".join(
        f'[machines.m{i:03d}]\nhost = "{address(i)}"\n'
        f"ssh_port = {up_ports[i] if i < UP else 1}\n"
        f"luks = {'true' if i % 3 == 0 else 'false'}\ninitrd_port = 1\n"
        f'operators = [{OPERATOR}]\nreboot_check = "0 4 * * 0"\n\n'
        for i in range(FLEET)
    )


@pytest_asyncio.fixture
async def fleet(rig: BotRig) -> AsyncIterator[BotRig]:
    """The bot with 300 machines; ten of them up behind a TCP listener."""
    servers = [await asyncio.start_server(lambda r, w: w.close(), address(i), 0) for i in range(UP)]
    try:
        await rig.start(inventory([s.sockets[0].getsockname()[1] for s in servers]))
        for i in range(UP):
            await rig.svc.store.update_machine(f"m{i:03d}", state="up")
        yield rig
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


def turned_to(first: FakeMessage, page: int) -> Callable[[FakeMessage], bool]:
    mark = f"page {page} of"
    return lambda m: m.message_id == first.message_id and mark in m.body


async def read_all_pages(tg: FakeTelegram, user: FakeUser, first: FakeMessage) -> list[str]:
    """Press › until the last page; every page as it was shown."""
    pages = [first.body]
    message = first
    while any(b.get("text") == "›" for row in message.buttons for b in row):
        await tg.press_button(user, message, "›")
        message = await tg.wait_for_message(user, turned_to(first, len(pages) + 1), edits=True)
        pages.append(message.body)
    return pages


def assert_within_limits(pages: list[str]) -> None:
    assert pages
    for page in pages:
        assert 0 < len(page) <= MAX_TEXT
    count = len(pages)
    if count > 1:
        assert [p.rsplit("\n", 1)[1] for p in pages] == [
            f"page {i} of {count}" for i in range(1, count + 1)
        ]


async def test_every_machine_is_reachable_by_paging_machines(fleet: BotRig) -> None:
    tg = fleet.tg
    admin = tg.user(ADMIN, "root_admin")
    first = await fleet.ask(admin, "/machines")
    pages = await read_all_pages(tg, admin, first)
    assert len(pages) > 1
    assert_within_limits(pages)
    assert all(p.startswith(f"Machines ({FLEET}):\n") for p in pages)
    names = [m for p in pages for m in re.findall(r"^• (m\d{3}) — ", p, re.MULTILINE)]
    assert names == [f"m{i:03d}" for i in range(FLEET)]
    # Back one page: the message is edited in place, not sent again.
    last = tg.message(admin, first.message_id)
    await tg.press_button(admin, last, "‹")
    back = await tg.wait_for_message(
        admin,
        lambda m: m.message_id == first.message_id and m.body == pages[-2],
        edits=True,
    )
    assert back.message_id == first.message_id
    assert len([m for m in tg.bot_messages(admin) if m.body.startswith("Machines")]) == 1


async def test_page_buttons_still_turn_after_a_restart(fleet: BotRig) -> None:
    tg = fleet.tg
    admin, op = tg.user(ADMIN, "root_admin"), tg.user(OPERATOR, "op")
    first = await fleet.ask(admin, "/machines")
    await fleet.restart()
    await tg.press_button(admin, first, "›")
    second = await tg.wait_for_message(admin, turned_to(first, 2), edits=True)
    assert second.body.startswith(f"Machines ({FLEET}):\n")
    # Still only for the person who asked.
    answer = await tg.wait_for_callback_answer(await tg.press(op, first, first.button_data("›")))
    assert answer.text == "Only the person who asked can turn these pages."


async def test_status_leads_with_a_summary_and_the_machines_that_need_attention(
    fleet: BotRig,
) -> None:
    tg = fleet.tg
    op = tg.user(OPERATOR, "op")
    first = await fleet.ask(op, "/status", timeout=30)
    pages = await read_all_pages(tg, op, first)
    assert_within_limits(pages)
    header = f"Status of {FLEET} machines: {FLEET - UP} unknown, {UP} up"
    assert all(p.startswith(header + "\n") for p in pages)
    assert pages[0].split("\n")[1] == f"Needs attention ({FLEET - UP}):"
    text = "\n".join(pages)
    order = re.findall(r"^• (m\d{3}) — ", text, re.MULTILINE)
    assert sorted(order) == [f"m{i:03d}" for i in range(FLEET)]
    assert order[-UP:] == [f"m{i:03d}" for i in range(UP)]  # the healthy ones come last
    # The healthy ones come after a heading of their own, past every machine needing attention.
    fine = text.index(f"Fine ({UP}):")
    assert fine > text.index(f"• m{UP + FLEET - UP - 1:03d} — ")


async def test_schedule_jobs_and_audit_page_within_the_limits(fleet: BotRig) -> None:
    tg, store = fleet.tg, fleet.svc.store
    admin = tg.user(ADMIN, "root_admin")
    schedule = await read_all_pages(tg, admin, await fleet.ask(admin, "/schedule"))
    assert_within_limits(schedule)
    shown = "\n".join(schedule)
    assert len(re.findall(r"^• probe m\d{3} ", shown, re.MULTILINE)) == FLEET
    assert len(re.findall(r"^• reboot test m\d{3} ", shown, re.MULTILINE)) == FLEET

    for i in range(120):
        job = await store.create_job(kind="deploy", machine=f"m{i:03d}", user_id=ADMIN, chat_id=1)
        await store.update_job(job.id, state="failed", result="x" * 300)
    jobs = await read_all_pages(tg, admin, await fleet.ask(admin, "/jobs"))
    assert len(jobs) > 1
    assert_within_limits(jobs)
    assert len(re.findall(r"^❌ #\d+ deploy ", "\n".join(jobs), re.MULTILINE)) == 100

    for _ in range(250):
        await store.audit(
            user_id=OPERATOR, username="op", action="/deploy", decision="refused", detail="🐈" * 500
        )
    audit = await read_all_pages(tg, admin, await fleet.ask(admin, "/audit"))
    assert len(audit) > 1
    assert_within_limits(audit)
    assert all(p.startswith("Last 200 audit entries (newest first):\n") for p in audit)


async def test_page_buttons_of_another_user_are_refused(fleet: BotRig) -> None:
    tg = fleet.tg
    admin, op = tg.user(ADMIN, "root_admin"), tg.user(OPERATOR, "op")
    stranger = tg.user(STRANGER, "mallory")
    first = await fleet.ask(admin, "/machines")
    following = first.button_data("›")
    token = following.split(":")[1]
    refusals = {
        op: (following, "Only the person who asked can turn these pages."),
        stranger: (following, "Not authorised."),
        admin: (f"{PREFIX}:{token[::-1]}:1", "These pages have expired: ask again."),
    }
    for presser, (data, expected) in refusals.items():
        answer = await tg.wait_for_callback_answer(await tg.press(presser, first, data))
        assert answer.text == expected
    for junk in (f"{PREFIX}:{token}:99", f"{PREFIX}:{token}:-1", f"{PREFIX}:{token}", "pg:🐈:1"):
        answer = await tg.wait_for_callback_answer(await tg.press(admin, first, junk))
        assert answer.text == "These pages have expired: ask again."
    # The same token pressed under another message of the bot turns nothing.
    help_message = await fleet.ask(admin, "/help")
    answer = await tg.wait_for_callback_answer(await tg.press(admin, help_message, following))
    assert answer.text == "These pages have expired: ask again."
    assert tg.message(admin, first.message_id).body == first.body
    assert not tg.message(admin, first.message_id).edited

    async def refusals_audited() -> bool:
        entries = await fleet.svc.store.recent_audit(200)
        return (
            len([e for e in entries if e.action == "page" and e.detail == Turn.NOT_YOURS.value])
            == 1
        )

    await eventually(refusals_audited, timeout=10, what="refused page turns audited")


# -- the pure part -------------------------------------------------------------------------


def test_pages_keep_every_line_whole_and_in_order() -> None:
    lines = [f"line {i} " + "é" * (i % 90) for i in range(1000)]
    pages = split_pages(lines, header="Header:", footer="— end —")
    assert_within_limits(pages)
    body = [
        line
        for page in pages
        for line in page.split("\n")[1:-2]  # header; footer and page mark
    ]
    assert body == lines
    assert all(p.split("\n")[-2] == "— end —" for p in pages)


def test_pages_count_code_points_not_bytes_or_utf16() -> None:
    """Telegram counts code points (docs/telegram-limits.md): 4096 cats fit, 4097 do not."""
    cats = ["🐈" * 100] * 60
    pages = split_pages(cats)
    assert_within_limits(pages)
    assert sum(len(p) for p in pages) > 6000
    assert len(pages[0]) > MAX_TEXT - 200  # full pages, not UTF-16-halved ones


def test_a_line_longer_than_a_page_is_split_not_cut() -> None:
    huge = "x" * 10_000
    pages = split_pages(["before", huge, "after"], header="H")
    assert_within_limits(pages)
    joined = "".join(p.split("\n", 1)[1].rsplit("\n", 1)[0].replace("\n", "") for p in pages)
    assert joined == "before" + huge + "after"


def test_one_short_list_is_one_page_without_a_page_mark() -> None:
    assert split_pages(["a", "b"], header="H") == ["H\na\nb"]


async def test_views_are_bounded_and_expire() -> None:
    now = [0.0]
    views = Views(limit=3, ttl=60, clock=lambda: now[0])
    opened = [views.open(1, ["p1", "p2"]) for _ in range(5)]
    for view in opened:
        await views.shown(view, 10, 20)
    assert len(views) == 3
    first = f"{PREFIX}:{opened[0].token}:1"
    assert (await views.press(first, 1, 10, 20)).turn is Turn.EXPIRED  # forgotten: beyond the limit
    last = f"{PREFIX}:{opened[-1].token}:1"
    assert (await views.press(last, 1, 10, 20)).turn is Turn.SHOWN
    assert (await views.press(last, 2, 10, 20)).turn is Turn.NOT_YOURS
    assert (await views.press(last, 1, 10, 21)).turn is Turn.EXPIRED
    now[0] = 61.0
    assert (await views.press(last, 1, 10, 20)).turn is Turn.EXPIRED
    assert len(views) == 0


def test_page_buttons_fit_telegrams_callback_data() -> None:
    view = Views().open(2**62, [f"p{i}" for i in range(10_000)])
    for row in view.buttons(5000):
        for button in row:
            assert len(button.data.encode()) <= 64
    with pytest.raises(ValueError, match="no room"):
        split_pages(["x"], header="h" * 4090)
