"""Fault matrix, the people: a user who never answers a prompt, or answers slowly.

Silence ends the job with nothing changed; a late passphrase is still deleted; a slow user
can run other commands while a prompt waits, and none of them is taken as the answer.
"""

from __future__ import annotations

from tests.people import OPERATOR
from tests.waiting import eventually
from tests.world import World

PASSPHRASE = "slow but correct horse"


async def test_silent_user_at_the_passphrase_prompt(world: World) -> None:
    host = world.lab.start_host("luks", luks=True)
    world.machine("clawsiecats", host)
    await world.start(answer_timeout=1.5)
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    await tg.wait_for_message(op, lambda m: "New disk passphrase" in m.body, timeout=20)
    end = await world.job_end(op)
    assert "🚫 no disk passphrase was given; nothing was changed" in end.body, end.body

    async def cancelled() -> bool:
        job = await world.rig.svc.store.job(1)
        return job is not None and job.state == "cancelled"

    await eventually(cancelled, what="job 1 cancelled")
    late = await tg.send_text(op, PASSPHRASE)
    note = await tg.wait_for_message(op, lambda m: "had expired" in m.body)
    assert "I deleted your message" in note.body
    assert tg.is_deleted(op, late.message_id)
    assert host.stage == "installer"
    assert not host.state.formatted
    assert not (world.root / "state" / "staging" / "job-1").exists()


async def test_slow_user_runs_commands_while_a_prompt_waits(world: World) -> None:
    host = world.lab.start_host("luks", luks=True)
    world.machine("clawsiecats", host)
    await world.start()
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    await tg.wait_for_message(op, lambda m: "New disk passphrase" in m.body, timeout=20)
    jobs = await world.rig.ask(op, "/jobs")
    assert "#1 deploy clawsiecats" in jobs.body
    assert "at disk passphrase" in jobs.body
    who = await world.rig.ask(op, "/whoami")
    assert who.body.startswith(f"You are {OPERATOR}")
    first = await tg.send_text(op, PASSPHRASE)
    await world.answer_secret(op, "again", PASSPHRASE)
    await tg.wait_until(lambda: tg.is_deleted(op, first.message_id), what="the answer deleted")
    prompt = await tg.wait_for_message(
        op, lambda m: "waiting for its disk passphrase" in m.body, timeout=30
    )
    del prompt
    await tg.send_text(op, PASSPHRASE)
    end = await world.job_end(op)
    assert "✅ unlocked by @opal" in end.body, end.body
    assert host.correct_attempts == 1
