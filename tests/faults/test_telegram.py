"""Fault matrix, Telegram side: 429s, 500s and dropped connections from the Bot API.

Every test ends with the bot still answering, nothing lost and nothing said twice.
"""

from __future__ import annotations

import logging

import pytest

from tests.botrig import BotRig
from tests.fake_telegram import FakeTelegram, FakeUser
from tests.people import OPERATOR
from tests.waiting import eventually
from tests.world import World

INVENTORY = f"""
[machines.web]
host = "127.0.0.1"
ssh_port = 1
operators = [{OPERATOR}]
"""


def answers(tg: FakeTelegram, user: FakeUser, text: str, since: int = 0) -> list[str]:
    return [m.body for m in tg.bot_messages(user) if text in m.body and m.seq > since]


async def whoami_answered_once(rig: BotRig, user: FakeUser) -> None:
    """One /whoami, one answer — also once every update has been confirmed."""
    mark = rig.tg.mark()
    reply = await rig.ask(user, "/whoami", timeout=20)
    assert reply.body == f"You are {user.id} (@{user.username}): operator of web."
    await rig.tg.wait_until(lambda: rig.tg.pending_updates == 0, what="updates confirmed")
    assert len(answers(rig.tg, user, f"You are {user.id}", since=mark)) == 1


@pytest.mark.parametrize(
    "fault",
    ["retry_after", "error", "drop"],
)
async def test_polling_survives_faults_and_loses_or_repeats_no_update(
    rig: BotRig, fault: str
) -> None:
    await rig.start(INVENTORY)
    tg = rig.tg
    op = tg.user(OPERATOR, "opal")
    await whoami_answered_once(rig, op)
    {
        "retry_after": lambda: tg.faults.retry_after("getUpdates", seconds=0.5, times=2),
        "error": lambda: tg.faults.error("getUpdates", status=500, times=2),
        "drop": lambda: tg.faults.drop("getUpdates", times=2),
    }[fault]()
    for _ in range(3):
        await tg.send_text(op, "/machines")
    await tg.wait_until(
        lambda: len(answers(tg, op, "Machines (1)")) >= 3, timeout=30, what="three answers"
    )
    await whoami_answered_once(rig, op)
    assert len(answers(tg, op, "Machines (1)")) == 3


@pytest.mark.parametrize("status", [200, 502])
async def test_an_answer_that_is_not_json_reaches_no_log(
    rig: BotRig, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """A cut or rewritten getUpdates answer may hold what people typed: PTB would log it
    whole (200) or quote it in the error it raises (502). Nothing of it reaches a log."""
    caplog.set_level(logging.INFO)
    await rig.start(INVENTORY)
    tg = rig.tg
    op = tg.user(OPERATOR, "opal")
    await whoami_answered_once(rig, op)
    secret = "correct horse battery staple"
    body = f'{{"ok":true,"result":[{{"update_id":7,"message":{{"text":"{secret}"'  # cut short
    fault = tg.faults.garbage("getUpdates", body=body, status=status, times=2)
    await tg.wait_until(lambda: fault.exhausted, timeout=30, what="both answers taken")
    await whoami_answered_once(rig, op)
    logged = caplog.text + "".join(
        repr(r.args) + repr(r.exc_info) for r in caplog.records if r.args or r.exc_info
    )
    assert secret not in logged
    assert "horse" not in logged
    assert "not JSON" in caplog.text  # the failure itself is told, by its size


async def test_offline_telegram_delivers_what_was_sent_meanwhile_once(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    tg = rig.tg
    op = tg.user(OPERATOR, "opal")
    await tg.go_offline()
    await tg.send_text(op, "/machines")
    await tg.send_text(op, "/help")
    await tg.go_online()
    await tg.wait_for_message(op, lambda m: "Machines (1)" in m.body, since=0, timeout=30)
    await tg.wait_for_message(op, lambda m: "Commands you may run" in m.body, since=0, timeout=30)
    assert len(answers(tg, op, "Machines (1)")) == 1
    assert len(answers(tg, op, "Commands you may run")) == 1


async def test_a_throttled_reply_still_reaches_the_user_once(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    tg = rig.tg
    op = tg.user(OPERATOR, "opal")
    tg.faults.retry_after("sendMessage", seconds=0.5, times=2)
    await whoami_answered_once(rig, op)


@pytest.mark.parametrize("fault", ["error", "drop"])
async def test_a_lost_reply_is_reported_and_the_next_command_works(rig: BotRig, fault: str) -> None:
    """A handler's reply that Telegram refuses with 5xx ends in a clear apology, not silence."""
    await rig.start(INVENTORY)
    tg = rig.tg
    op = tg.user(OPERATOR, "opal")
    if fault == "error":
        tg.faults.error("sendMessage", status=502, description="Bad Gateway", times=1)
    else:
        tg.faults.drop("sendMessage", times=1)
    sorry = await rig.ask(op, "/whoami", timeout=20)
    assert sorry.body == "Something went wrong on my side; it is logged."
    await whoami_answered_once(rig, op)


async def test_deploy_progress_survives_throttling_errors_and_drops(world: World) -> None:
    """The job's messages arrive late but once: one progress message, its end shown."""
    host = world.lab.start_host("plain", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    tg.faults.drop("sendMessage", times=1)
    tg.faults.retry_after("editMessageText", seconds=0.5, times=2)
    tg.faults.error("editMessageText", status=500, times=3)
    tg.faults.drop("editMessageText", times=2)
    confirmation = await world.confirm_deploy(op, "clawsiecats")
    assert "This erases the whole disk of clawsiecats" in confirmation.body
    end = await world.job_end(op)
    assert "✅ installed and up" in end.body, end.body
    progress = [m for m in tg.bot_messages(op) if "(job 1)" in m.body]
    assert len(progress) == 1, tg.transcript(op)
    assert len([m for m in tg.bot_messages(op) if "This erases" in m.body]) == 1
    assert all(rule.exhausted for rule in tg.faults.rules)
    await job_state_is(world, 1, "succeeded")
    await whoami_after_job(world)


async def test_final_state_is_posted_when_the_progress_message_cannot_be_edited(
    world: World,
) -> None:
    """Telegram refusing every edit of the progress message still lets the end be told."""
    host = world.lab.start_host("plain", luks=False)
    host.inject_failure("disko", exit_code=4, message="simulated disko failure")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    tg.faults.error(
        "editMessageText",
        status=400,
        description="Bad Request: message to edit not found",
        times=None,
        where=lambda p: "(job 1)" in str(p.get("text", "")),
    )
    await world.confirm_deploy(op, "clawsiecats")
    end = await tg.wait_for_message(
        op, lambda m: "(job 1) — failed after" in m.body, since=0, timeout=60
    )
    assert "❌ failed at nixos-anywhere" in end.body
    assert "exited 4" in end.body
    await tg.wait_until(lambda: tg.documents_in(op), what="the job log")
    await whoami_after_job(world)


async def job_state_is(world: World, job_id: int, state: str) -> None:
    async def stored() -> bool:
        job = await world.rig.svc.store.job(job_id)
        return job is not None and job.state == state

    await eventually(stored, what=f"job {job_id} {state}")


async def whoami_after_job(world: World) -> None:
    reply = await world.rig.ask(world.op, "/whoami", timeout=20)
    assert reply.body.startswith(f"You are {OPERATOR}")
