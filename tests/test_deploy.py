"""/deploy end to end: the real bot over the fake Bot API, installing lab hosts."""

from __future__ import annotations

import re
import stat

from bot.keys import fingerprint, public_from_private
from tests.world import HOST_KEY_SECRET, World

PASSPHRASE = "tr0ub4dor&3 but longer"


async def test_plain_install_lands_files_and_boots(world: World) -> None:
    host = world.lab.start_host("plain", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op = world.op
    confirmation = await world.confirm_deploy(op, "clawsiecats")
    assert "This erases the whole disk of clawsiecats" in confirmation.body
    assert fingerprint(host.installer_host_key or "") in confirmation.body
    assert "NixOS installer, 2048 MiB RAM" in confirmation.body
    end = await world.job_end(op)
    assert "✅ installed and up, running" in end.body, end.body
    await host.wait_for_stage("booted")
    # What landed on the host, as the lab's filesystem shows it.
    persist = host.persist
    machine_id = (persist / "etc" / "machine-id").read_text()
    assert re.fullmatch(r"[0-9a-f]{32}\n", machine_id)
    key_file = persist / "etc" / "ssh" / "ssh_host_ed25519_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text() == world.host_private_key
    assert world.sops.decrypt(HOST_KEY_SECRET) == world.host_private_key
    public = (persist / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert public == public_from_private(world.host_private_key).split()[:2]
    known = await world.rig.svc.store.machine("clawsiecats")
    assert known.host_key.split()[:2] == public
    assert known.state == "up"
    assert known.installed_at
    # The staging folder is gone once the job ended.
    assert not any((world.root / "state" / "staging").iterdir())


async def test_luks_install_reaches_initrd_and_is_unlocked(world: World) -> None:
    host = world.lab.start_host("luks", luks=True)
    world.machine("clawsiecats", host)
    await world.start()
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    first = await world.answer_secret(op, "New disk passphrase for clawsiecats", PASSPHRASE)
    second = await world.answer_secret(op, "again", PASSPHRASE)
    await tg.wait_until(
        lambda: tg.is_deleted(op, first.message_id) and tg.is_deleted(op, second.message_id)
    )
    await host.wait_for_stage("initrd", timeout=30)
    known = await world.rig.svc.store.machine("clawsiecats")
    # The initrd key on the host's /boot is the one the bot pinned.
    assert (host.initrd_host_key or "").split()[:2] == known.initrd_host_key.split()[:2]
    prompt = await tg.wait_for_message(
        op, lambda m: "waiting for its disk passphrase" in m.body, timeout=30
    )
    assert fingerprint(known.initrd_host_key) in prompt.body
    answer = await tg.send_text(op, PASSPHRASE)
    end = await world.job_end(op)
    assert "✅ unlocked by @opal, up after" in end.body, end.body
    assert tg.is_deleted(op, answer.message_id)
    assert host.correct_attempts == 1
    assert host.stage == "booted"
