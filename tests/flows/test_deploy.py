"""/deploy end to end: the real bot over the fake Bot API, installing lab hosts."""

from __future__ import annotations

import re
import stat

import pytest

from bot.core.keys import fingerprint, public_from_private
from tests.people import STRANGER
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
    # nixos-anywhere installed what the bot built and checked: it built nothing again.
    (run,) = world.lab.stand_ins()
    assert run["builds"] == []
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


async def test_status_answers_while_a_job_runs_and_cancel_stops_it(world: World) -> None:
    host = world.lab.start_host("hang", luks=False)
    host.hang_at("install")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    await tg.wait_for_message(
        op, lambda m: "› nixos-anywhere: Uploading" in m.body, edits=True, since=0
    )
    # The chat stays responsive while nixos-anywhere runs.
    status = await world.rig.ask(op, "/status clawsiecats")
    assert "clawsiecats" in status.body
    second = await world.rig.ask(op, "/deploy clawsiecats")
    assert second.body.startswith("clawsiecats already has job 1 (deploy, running")
    jobs = await world.rig.ask(op, "/jobs")
    assert "#1 deploy clawsiecats" in jobs.body
    cancelled = await world.rig.ask(op, "/cancel 1")
    assert cancelled.body == "Job 1 cancelled; its processes were stopped."
    end = await world.job_end(op)
    assert "— cancelled after" in end.body
    job = await world.rig.svc.store.job(1)
    assert job is not None
    assert job.state == "cancelled"
    assert not any((world.root / "state" / "staging").iterdir())
    assert not world.stand_ins(), "nixos-anywhere survived the cancel"


@pytest.mark.parametrize("phase", ["ssh-keys", "facts", "disko", "install", "reboot"])
async def test_each_injected_failure_fails_the_job_and_sends_the_log(
    world: World, phase: str
) -> None:
    host = world.lab.start_host("faulty", luks=False)
    host.inject_failure(phase, exit_code=3, message=f"simulated {phase} failure")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    end = await world.job_end(op)
    assert "— failed after" in end.body
    assert "❌ failed at nixos-anywhere" in end.body
    assert "exited 3" in end.body, end.body
    await tg.wait_until(lambda: tg.documents_in(op), what="the job log")
    log = tg.documents_in(op)[-1]
    assert log.document is not None
    assert f"simulated {phase} failure".encode() in log.document.data
    job = await world.rig.svc.store.job(1)
    assert job is not None
    assert job.state == "failed"


async def test_bad_flake_attribute_fails_with_nix_error(world: World) -> None:
    host = world.lab.start_host("badattr", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="no-such-attr")
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    end = await world.job_end(world.op)
    assert "❌ failed at nixos-anywhere" in end.body
    assert "no-such-attr" in end.body, end.body


async def test_kexec_on_768_mib_is_refused_before_anything_happens(world: World) -> None:
    host = world.lab.start_host("small", os="debian", mem_mib=768, luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/deploy clawsiecats")
    end = await world.job_end(op)
    assert "❌ failed at preflight" in end.body
    assert "768 MiB" in end.body
    assert "minimal NixOS installer ISO with zram" in end.body
    assert not [m for m in tg.bot_messages(op) if m.buttons], "no confirmation was offered"
    assert host.stage == "installer"


async def test_kexec_under_1_5_gib_warns_and_installs(world: World) -> None:
    host = world.lab.start_host("tight", os="debian", mem_mib=1280, luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    end = await world.job_end(world.op)
    assert "⚠️ only 1280 MiB of RAM for kexec" in end.body
    assert "— succeeded after" in end.body, end.body


async def test_refusals_unknown_stranger_and_installed(world: World) -> None:
    host = world.lab.start_host("plain", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    unknown = await world.rig.ask(op, "/deploy nosuch")
    assert unknown.body == "You may not act on 'nosuch': it is unknown or not one of yours."
    stranger = tg.user(STRANGER, "mallory")
    refused = await world.rig.ask(stranger, "/deploy clawsiecats")
    assert refused.body.startswith("Not authorised.")
    # Install it, then /deploy again: it answers with its pinned key, so it is an update,
    # which never offers to erase anything.
    await world.confirm_deploy(op, "clawsiecats")
    assert "— succeeded after" in (await world.job_end(op)).body
    # A new configuration to update to: the installed one is exactly what the flake builds.
    world.lab.set_configuration(world.flake, "clawsiecats", version="2")
    await tg.send_text(op, "/deploy clawsiecats")
    again = await tg.wait_for_message(op, lambda m: bool(m.buttons), timeout=30)
    assert again.body.startswith("Update clawsiecats? Its disks are not touched.")
    assert "erase" not in again.body.lower()
    assert [b["text"] for row in again.buttons for b in row] == ["Update clawsiecats", "Cancel"]
    await tg.press_button(op, again, "Cancel")
    end = await tg.wait_for_message(
        op, lambda m: "(job 2) — cancelled after" in m.body, edits=True, since=0, timeout=30
    )
    assert "cancelled at the confirmation; nothing was changed" in end.body
    assert host.stage == "booted"


async def test_confirmation_is_only_for_the_asker_and_expires(world: World) -> None:
    host = world.lab.start_host("plain", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start(confirm_timeout=2.0)
    op, tg = world.op, world.rig.tg
    group = tg.group(-100, "ops")
    admin = world.admin
    await tg.send_text(op, "/deploy clawsiecats", chat=group)
    confirmation = await tg.wait_for_message(group, lambda m: bool(m.buttons), timeout=20)
    data = confirmation.button_data("Erase and install")
    query = await tg.press(admin, confirmation, data)
    answer = await tg.wait_for_callback_answer(query)
    assert answer.text == "Only the person who asked can answer this."
    end = await world.job_end(group)
    assert "🚫 the confirmation expired; nothing was changed" in end.body
    assert confirmation.buttons == []  # the expired confirmation lost its buttons
    late = await tg.press(op, confirmation, data)  # a replayed press
    assert (await tg.wait_for_callback_answer(late)).text == "This confirmation has expired."
    assert host.stage == "installer"


async def test_restart_mid_job_marks_it_interrupted_and_tells_the_chat(world: World) -> None:
    host = world.lab.start_host("hang", luks=False)
    host.hang_at("disko")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    await tg.wait_for_message(op, lambda m: "Formatting" in m.body, edits=True, since=0)
    await world.rig.restart()
    end = await world.job_end(op)
    assert "⏹ interrupted: the bot stopped" in end.body
    job = await world.rig.svc.store.job(1)
    assert job is not None
    assert job.state == "interrupted"
    assert not world.stand_ins()
    jobs = await world.rig.ask(op, "/jobs")
    assert "interrupted" in jobs.body
    assert host.stage == "installer"  # nothing was started again


async def test_jobs_a_crashed_process_left_running_are_reported(world: World) -> None:
    host = world.lab.start_host("plain", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    store = world.rig.svc.store
    # What a process killed mid-deploy leaves behind: a job still marked running.
    job = await store.create_job(kind="deploy", machine="clawsiecats", user_id=op.id, chat_id=op.id)
    await store.update_job(job.id, state="running", phase="nixos-anywhere")
    await world.rig.restart()
    told = await tg.wait_for_message(op, lambda m: "was interrupted" in m.body, since=0)
    assert f"Job {job.id} (deploy clawsiecats) was interrupted" in told.body
    assert "Nothing was started again" in told.body
    again = await world.rig.svc.store.job(job.id)
    assert again is not None
    assert again.state == "interrupted"
    await world.rig.restart()
    assert len([m for m in tg.bot_messages(op) if "was interrupted" in m.body]) == 1


async def test_reinstall_asks_for_the_name(world: World) -> None:
    host = world.lab.start_host("plain", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    assert "— succeeded after" in (await world.job_end(op)).body
    await tg.send_text(op, "/reinstall clawsiecats")
    ask = await tg.wait_for_message(op, lambda m: "type the machine's name" in m.body, timeout=20)
    assert "its pinned host key" in ask.body
    await tg.send_text(op, "clawsiecat")
    wrong = await tg.wait_for_message(op, lambda m: "(job 2) — cancelled" in m.body, edits=True)
    assert "the typed name did not match" in wrong.body
    await tg.send_text(op, "/reinstall clawsiecats")
    await tg.wait_for_message(op, lambda m: "type the machine's name" in m.body, timeout=20)
    await tg.send_text(op, "clawsiecats")
    done = await tg.wait_for_message(
        op, lambda m: "(job 3) — succeeded" in m.body, edits=True, timeout=60
    )
    assert "installed and up" in done.body


async def test_log_sends_events_and_the_full_log(world: World) -> None:
    host = world.lab.start_host("faulty", luks=False)
    host.inject_failure("disko", exit_code=2, message="disk on fire")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    await world.job_end(op)
    # A failed job sends its log by itself first.
    await tg.wait_until(lambda: len(tg.documents_in(op)) == 1, what="the failure's log")
    summary = await world.rig.ask(op, "/log 1")
    assert summary.body.startswith("❌ #1 deploy clawsiecats")
    assert "phase: nixos-anywhere" in summary.body
    await tg.wait_until(lambda: len(tg.documents_in(op)) == 2, what="the log document")
    document = tg.documents_in(op)[-1].document
    assert document is not None
    assert document.file_name == "job-1-clawsiecats.log"
    assert b"disk on fire" in document.data
    nobody = await world.rig.ask(tg.user(STRANGER), "/log 1")
    assert nobody.body.startswith("Not authorised.")


async def test_kexec_failure_on_a_debian_host(world: World) -> None:
    host = world.lab.start_host("debian", os="debian", luks=False)
    host.inject_failure("kexec", exit_code=1, message="Failed to kexec into NixOS installer")
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    confirmation = await world.confirm_deploy(world.op, "clawsiecats")
    assert "(kexec), 2048 MiB RAM" in confirmation.body
    end = await world.job_end(world.op)
    assert "❌ failed at nixos-anywhere (kexec)" in end.body, end.body
    assert host.stage == "installer"


async def test_jobs_beyond_the_global_limit_wait_their_turn(world: World) -> None:
    first = world.lab.start_host("first", luks=False)
    second = world.lab.start_host("second", luks=False)
    first.hang_at("install")
    world.machine("one", first, luks=False, flake_attr="clawsiecats")
    world.machine("two", second, luks=False, flake_attr="clawsiecats")
    await world.start(max_parallel_jobs=1)
    op, tg = world.op, world.rig.tg
    await world.confirm_deploy(op, "one")
    await tg.wait_for_message(
        op, lambda m: "› nixos-anywhere: Uploading" in m.body, edits=True, since=0
    )
    await tg.send_text(op, "/deploy two")
    waiting = await tg.wait_for_message(
        op, lambda m: m.body.startswith("Deploy two (job 2)"), since=0
    )
    store = world.rig.svc.store
    queued = await store.job(2)
    assert queued is not None
    assert queued.state == "queued"
    assert "▶️" not in waiting.body
    assert not [m for m in tg.bot_messages(op) if m.buttons and "two" in m.body]
    await world.rig.ask(op, "/cancel 1")
    confirmation = await tg.wait_for_message(
        op, lambda m: bool(m.buttons) and "two" in m.body, since=0, timeout=30
    )
    await tg.press_button(op, confirmation, "Erase and install")
    done = await tg.wait_for_message(
        op, lambda m: "(job 2) — succeeded" in m.body, edits=True, since=0, timeout=60
    )
    assert "installed and up" in done.body
