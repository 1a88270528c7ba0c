"""/report and the weekly report: a picture of the fleet's week, sent as Telegram takes it.

The week is what the bot recorded: probe counts per hour, incidents, reboot tests and the
events the watcher and the unlocker write. Seven days cannot pass in a test, so the probe
counts of the week are written into the bot's own store as its watcher writes them, hour
by hour; the rest comes from the lab. The fake Bot API refuses a photo over Telegram's
limits, so a picture that arrives was within them; the test reads its header too.
"""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from PIL import Image

from bot.core.telegram_limits import (
    MAX_CAPTION,
    MAX_PHOTO_BYTES,
    MAX_PHOTO_RATIO,
    MAX_PHOTO_SIDES,
)
from bot.flows.report.chart import LIMIT
from bot.flows.report.schedule import WEEKLY_ID
from tests.botrig import BotRig
from tests.fake_telegram import FakeMessage, FakeUser
from tests.people import ADMIN, OPERATOR, OTHER_OPERATOR
from tests.waiting import eventually
from tests.world import World

HOURS = 7 * 24


def machines(count: int, *, operators: tuple[int, ...] = (OPERATOR,), tags: str = "") -> str:
    """``count`` machines on loopback ports nothing answers; probed once an hour, so never
    during a test."""
    ops = ", ".join(str(o) for o in operators)
    return "".join(
        f'[machines.m{i:02d}]\nhost = "127.0.9.{1 + i}"\nssh_port = 1\noperators = [{ops}]\n'
        f'probe_interval = "1h"\n{tags}\n'
        for i in range(count)
    )


async def seed_probes(rig: BotRig, machine: str, *, up_hours: int, hours: int = HOURS) -> None:
    """The watcher's probe counts of the last ``hours``: 60 probes an hour, all up in the
    first ``up_hours`` hours, none up after."""
    now = datetime.now(UTC)

    def write() -> None:
        for h in range(hours):
            hour = (now - timedelta(hours=hours - 1 - h)).strftime("%Y-%m-%dT%H")
            rig.svc.store.db.execute(
                "insert into probe_hours (machine, hour, probes, up) values (?, ?, 60, ?)",
                [machine, hour, 60 if h < up_hours else 0],
            )

    await rig.svc.store.write(write)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG's own header (signature, then the IHDR chunk)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def within_photo_limits(photo: FakeMessage) -> tuple[int, int]:
    assert photo.photo is not None
    data = photo.photo.file.data
    width, height = png_size(data)
    assert (width, height) == (photo.photo.width, photo.photo.height)
    assert len(data) <= MAX_PHOTO_BYTES
    assert width + height <= MAX_PHOTO_SIDES
    assert max(width, height) <= MAX_PHOTO_RATIO * min(width, height)
    assert len(photo.caption or "") <= MAX_CAPTION
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # the whole file decodes, not only its header
    return width, height


async def photo_for(rig: BotRig, user: FakeUser, text: str) -> FakeMessage:
    before = len(rig.tg.photos_in(user))
    await rig.tg.send_text(user, text)
    await rig.tg.wait_until(lambda: len(rig.tg.photos_in(user)) > before, what="the picture")
    return rig.tg.photos_in(user)[-1]


@pytest.mark.parametrize(("fleet", "drawn"), [(30, 30), (45, 30)])
async def test_a_fleet_is_drawn_worst_first_within_the_photo_limits(
    rig: BotRig, fleet: int, drawn: int
) -> None:
    await rig.start(machines(fleet))
    for i in range(fleet):
        await seed_probes(rig, f"m{i:02d}", up_hours=HOURS - i)  # m44 is the least up
    admin = rig.tg.user(ADMIN, "ada")
    photo = await photo_for(rig, admin, "/report")
    width, _ = within_photo_limits(photo)
    assert width >= 1200, "wide enough for large type on a phone"
    caption = photo.caption or ""
    assert caption.startswith(f"📊 {fleet} machines")
    report = await rig.svc.engine.reporter.draw(list(rig.svc.inventory))
    assert [m.name for m in report.chart.shown] == [f"m{i:02d}" for i in range(fleet)][::-1][
        :drawn
    ], "worst first"
    assert report.chart.more == fleet - drawn
    assert len(report.chart.shown) <= LIMIT
    if fleet > LIMIT:
        assert f"The {LIMIT} worst are drawn; {fleet - LIMIT} more are not." in caption
    else:
        assert "more are not" not in caption
    worst = fleet - 1
    share = (HOURS - worst) / HOURS * 100
    assert f"Up: m{worst:02d} {share:.1f} %" in caption


async def test_a_machine_down_half_the_week_shows_about_half(rig: BotRig) -> None:
    await rig.start(machines(2))
    await seed_probes(rig, "m00", up_hours=HOURS // 2)
    await seed_probes(rig, "m01", up_hours=HOURS)
    op = rig.tg.user(OPERATOR, "opal")
    answer = await rig.ask(op, "/report m00")
    assert answer.body == "Drawing the last 7 days of 1 machine…"
    photo = await photo_for(rig, op, "/report m00")
    within_photo_limits(photo)
    assert "Up: m00 50.0 %." in (photo.caption or "")
    report = await rig.svc.engine.reporter.draw([rig.svc.inventory.machines["m00"]])
    (drawn,) = report.chart.shown
    assert drawn.name == "m00"
    assert drawn.share == pytest.approx(0.5, abs=0.01)
    assert (drawn.probes, drawn.up) == (HOURS * 60, HOURS // 2 * 60)


async def test_a_tag_selects_the_askers_machines_with_it(rig: BotRig) -> None:
    inventory = (
        machines(2, tags='tags = ["web", "eu"]')
        + '[machines.theirs]\nhost = "127.0.9.50"\nssh_port = 1\n'
        f'operators = [{OTHER_OPERATOR}]\ntags = ["web"]\n'
        '[machines.db]\nhost = "127.0.9.51"\nssh_port = 1\n'
        f'operators = [{OPERATOR}]\ntags = ["db"]\n'
    )
    await rig.start(inventory)
    op, admin = rig.tg.user(OPERATOR, "opal"), rig.tg.user(ADMIN, "ada")
    mine = await photo_for(rig, op, "/report tag:web")
    caption = mine.caption or ""
    assert caption.startswith("📊 2 machines")
    assert "Never probed: m00, m01." in caption
    every = await photo_for(rig, admin, "/report tag:web")
    assert "Never probed: m00, m01, theirs." in (every.caption or "")
    none = await rig.ask(op, "/report tag:mail")
    assert none.body == "None of your machines is tagged mail."
    bad = await rig.ask(op, "/report tag:Web!")
    assert "that argument is not a name I know" in bad.body


async def test_a_machine_one_does_not_operate_is_refused(rig: BotRig) -> None:
    inventory = machines(1) + (
        f'[machines.theirs]\nhost = "127.0.9.50"\nssh_port = 1\noperators = [{OTHER_OPERATOR}]\n'
    )
    await rig.start(inventory)
    op = rig.tg.user(OPERATOR, "opal")
    refused = await rig.ask(op, "/report theirs")
    assert refused.body == "You may not act on 'theirs': it is unknown or not one of yours."
    assert rig.tg.photos_in(op) == []
    in_group = await rig.ask(op, "/report", chat=rig.tg.group(-100, "ops", members=[op]))
    assert "works only in our private chat" in in_group.body
    audit = await rig.svc.store.recent_audit(10)
    assert any(a.action == "/report" and a.decision == "refused" for a in audit)


async def test_the_weekly_report_is_scheduled_and_goes_to_the_admins(rig: BotRig) -> None:
    rig.env["DEPLOYBOT_ADMINS"] = f"{ADMIN},4343"
    await rig.start(machines(3))
    await seed_probes(rig, "m01", up_hours=HOURS - 12)
    queue = rig.app.job_queue if rig.app is not None else None
    assert queue is not None
    (job,) = queue.get_jobs_by_name(WEEKLY_ID)
    assert job.job.id == WEEKLY_ID
    when = job.next_t
    assert when is not None
    assert (when.astimezone(UTC).weekday(), when.hour, when.minute) == (0, 8, 0)
    # /schedule lists it beside the machines' schedules, for operators too.
    for person in (rig.tg.user(ADMIN, "admin"), rig.tg.user(OPERATOR, "opal")):
        listed = await rig.ask(person, "/schedule")
        next_run = f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        line = f"• weekly report to the admins (0 8 * * 1) — next {next_run}"
        assert line in listed.body.splitlines(), listed.body
    await rig.restart()  # registered again, not twice
    app = rig.app
    assert app is not None
    assert app.job_queue is not None
    (job,) = app.job_queue.get_jobs_by_name(WEEKLY_ID)
    admins = [rig.tg.user(admin, f"admin{admin}") for admin in (ADMIN, 4343)]
    await job.run(app)
    for user in admins:
        await rig.tg.wait_until(partial(rig.tg.photos_in, user), what="the weekly report")
        (photo,) = rig.tg.photos_in(user)
        within_photo_limits(photo)
        assert f"m01 {(HOURS - 12) / HOURS * 100:.1f} %" in (photo.caption or "")
    assert rig.tg.photos_in(rig.tg.user(OPERATOR, "opal")) == []


async def test_no_weekly_report_when_the_setting_is_empty(rig: BotRig) -> None:
    rig.env["DEPLOYBOT_REPORT"] = ""
    await rig.start(machines(1))
    assert rig.app is not None
    assert rig.app.job_queue is not None
    assert rig.app.job_queue.get_jobs_by_name(WEEKLY_ID) == ()
    listed = await rig.ask(rig.tg.user(ADMIN, "admin"), "/schedule")
    assert "weekly report" not in listed.body, listed.body


async def test_unexpected_reboots_and_unlock_waits_are_counted(world: World) -> None:
    host = world.lab.start_installed_host("luks", stage="booted")
    world.machine("vault", host, probe_interval="300ms", unlock_timeout="20s")
    await world.start(alert_after=2, alert_batch=0.3, unlock_settle=1.0)
    await world.pin("vault", host, initrd=True)

    async def up() -> bool:
        return (await world.rig.svc.store.machine("vault")).state == "up"

    await eventually(up, timeout=15, what="vault probed up")
    op, tg = world.op, world.rig.tg
    host.reboot()
    await world.answer_secret(op, "waiting for its disk passphrase", host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "vault unlocked by" in m.body, timeout=30)

    async def counted() -> bool:
        report = await world.rig.svc.engine.reporter.draw(
            [world.rig.svc.inventory.machines["vault"]]
        )
        (vault,) = report.week.machines
        return vault.reboots == 1 and len(vault.unlock_waits) == 1

    await eventually(counted, timeout=15, what="the reboot and the unlock recorded")
    photo = await photo_for(world.rig, op, "/report vault")
    caption = photo.caption or ""
    assert "Unexpected reboots: 1 (vault 1)." in caption
    assert "Unlocks: 1, the longest wait" in caption


async def test_a_picture_telegram_refuses_is_said_so(rig: BotRig) -> None:
    await rig.start(machines(1))
    rig.tg.faults.error(
        "sendPhoto", status=400, description="Bad Request: PHOTO_INVALID_DIMENSIONS"
    )
    op = rig.tg.user(OPERATOR, "opal")
    await rig.tg.send_text(op, "/report")
    told = await rig.tg.wait_for_message(op, lambda m: "did not take the picture" in m.body)
    assert told.body == "⚠️ Telegram did not take the picture; see my log."
    assert rig.tg.photos_in(op) == []
