"""A stolen Telegram session tries to wipe a disk protected by ``erase_approval = true``."""

from __future__ import annotations

from tests.world import World

APPROVE = "Approve erasing clawsiecats"


async def test_a_stolen_session_alone_cannot_erase(world: World) -> None:
    host = world.lab.start_host("plain", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats", erase_approval=True)
    await world.start(confirm_timeout=4.0)
    op, admin, tg = world.op, world.admin, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    asked = await tg.wait_for_message(admin, lambda m: APPROVE in str(m.buttons), timeout=20)
    assert f"{op.id} asks to erase clawsiecats" in asked.body
    end = await world.job_end(op)
    assert "— cancelled after" in end.body, end.body
    assert "nobody approved erasing it in time" in end.body
    # The requester is never asked to approve their own request.
    assert not [m for m in tg.bot_messages(op) if APPROVE in str(m.buttons)]
    assert host.stage == "installer"
    assert not world.stand_ins()
    audit = await world.rig.svc.store.recent_audit(50)
    assert [(e.action, e.decision) for e in audit if e.action == "erase approval"] == [
        ("erase approval", "expired")
    ]


async def test_a_second_person_approves_and_the_install_runs(world: World) -> None:
    host = world.lab.start_host("plain", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats", erase_approval=True)
    await world.start()
    op, admin, tg = world.op, world.admin, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    asked = await tg.wait_for_message(admin, lambda m: APPROVE in str(m.buttons), timeout=20)
    await tg.press_button(admin, asked, APPROVE)
    end = await world.job_end(op)
    assert "✅ installed and up" in end.body, end.body
    audit = await world.rig.svc.store.recent_audit(50)
    approvals = [(e.user_id, e.decision) for e in audit if e.action == "erase approval"]
    assert approvals == [(admin.id, "approved")]
