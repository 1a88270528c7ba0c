"""Hostile input: command arguments, callback data and inventory values chosen to hurt.

Properties are checked on the pure parts (inventory validation, the argv built from it,
confirmations) with many examples, and through the whole bot over the fake Bot API with
fewer: no exception escapes, nothing is executed, and every message gets one clear answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot.chat.confirm import Confirmations, Press
from bot.config.inventory import InventoryError, Machine, parse_inventory
from bot.flows.deploy.nixos_anywhere import (
    DEFAULT_PREFIX,
    DISK_KEY_FD_AUTO,
    build_argv,
    parse_prefix,
)
from bot.flows.deploy.staging import persist_root
from handlers import command_table
from tests.botrig import BotRig
from tests.people import ADMIN, OPERATOR, OTHER_OPERATOR, STRANGER
from tests.waiting import eventually
from tests.world import World

SHELL = ["$(touch {canary})", "`touch {canary}`", "; touch {canary}", "| touch {canary} &&"]
TRAVERSAL = ["../../etc/passwd", "..", "/etc/shadow", "..\\..\\boot.ini", "%2e%2e%2f", "~root"]
UNICODE = ["clawsiecats\u202e", "cl\u0430wsiecats", "\u200bweb", "ｗｅｂ", "web\u0000", "🐈" * 40]
NASTY = [*SHELL, *TRAVERSAL, *UNICODE, "-rf", "--flake=evil", "a" * 5000, "\t\r", "'\"\\"]

hostile_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(min_size=1, max_size=80),
    st.text(alphabet="$`;|&<>(){}[]*?!~#'\"\\ ./-\n\t", min_size=1, max_size=40),
    st.text(min_size=1000, max_size=1200),
)


# -- inventory values ---------------------------------------------------------------------

FIELDS = (
    "host",
    "flake_attr",
    "ssh_user",
    "persist_dir",
    "rw_store_size",
    "host_key_secret",
    "secrets_file",
    "initrd_host_key",
    "unlock",
    "probe_interval",
    "reboot_check",
)
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SAFE_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
SAFE_SIZE = re.compile(r"\d+[KMGT]?")


def accepted(data: dict[str, Any]) -> Machine | None:
    """The machine if the inventory is accepted; None if refused the documented way."""
    try:
        inventory = parse_inventory({"machines": data}, Path("/srv/deploybot/machines.toml"))
    except InventoryError as exc:
        problems = exc.problems
    else:
        return next(iter(inventory))
    assert problems
    return None


def assert_usable(machine: Machine) -> None:
    """What the bot does with an accepted machine cannot be bent into something else."""
    assert SAFE_NAME.fullmatch(machine.name)
    assert SAFE_USER.fullmatch(machine.ssh_user)
    assert not machine.rw_store_size or SAFE_SIZE.fullmatch(machine.rw_store_size)
    argv = build_argv(
        parse_prefix(DEFAULT_PREFIX),
        flake="/srv/flake",
        attr=machine.flake_attr,
        target_host=machine.host,
        ssh_port=machine.ssh_port,
        ssh_key=Path("/srv/key"),
        extra_files=Path("/srv/state/staging/job-1"),
        disk_key_fd=DISK_KEY_FD_AUTO,
    )
    assert argv[-1] == f"root@{machine.host}"
    root = Path("/srv/state/staging/job-1")
    assert persist_root(root, machine.persist_dir).is_relative_to(root)
    if machine.secrets_file is not None:
        assert "\0" not in str(machine.secrets_file)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=hostile_text)
def test_hostile_inventory_values_are_refused_or_harmless(field: str, value: str) -> None:
    entry = {"host": "10.0.0.1", "host_key_secret": "k", "secrets_file": "s.yaml", field: value}
    machine = accepted({"clawsiecats": entry})
    if machine is not None:
        assert_usable(machine)


@settings(max_examples=150, deadline=None)
@given(name=hostile_text)
def test_hostile_machine_names_are_refused(name: str) -> None:
    assume(not SAFE_NAME.fullmatch(name))
    assert accepted({name: {"host": "10.0.0.1"}}) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("flake_attr", "clawsiecats\n"),
        ("ssh_user", "root\n"),
        ("rw_store_size", "512M\n"),
        ("host", "example.org\n"),
        ("host_key_secret", "key\n"),
        ("secrets_file", "s.yaml\x00"),
    ],
)
def test_control_characters_in_inventory_values_are_refused(field: str, value: str) -> None:
    """A regex anchored with '$' also accepts a trailing newline; NUL breaks every argv."""
    entry = {"host": "10.0.0.1", "host_key_secret": "k", "secrets_file": "s.yaml", field: value}
    assert accepted({"clawsiecats": entry}) is None


# -- confirmations -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(
        hostile_text,
        st.builds(lambda t, c: f"cf:{t}:{c}", st.text(max_size=20), st.sampled_from("yn")),
    ),
    presser=st.sampled_from([ADMIN, OPERATOR, OTHER_OPERATOR, STRANGER]),
)
async def test_forged_callback_data_never_answers_a_confirmation(data: str, presser: int) -> None:
    confirmations = Confirmations()
    mine = confirmations.open(OPERATOR)
    real = {b.data for row in mine.buttons("yes") for b in row}
    assume(data not in real)
    assert confirmations.press(data, presser) is Press.EXPIRED
    assert not mine.future.done()
    for forged in real:  # the real data, pressed by someone else
        if presser != OPERATOR:
            assert confirmations.press(forged, presser) is Press.NOT_YOURS
    assert not mine.future.done()
    assert confirmations.press(f"cf:{mine.token}:y", OPERATOR) is Press.ACCEPTED
    assert confirmations.press(f"cf:{mine.token}:y", OPERATOR) is Press.EXPIRED  # replayed
    assert confirmations.press(f"cf:{mine.token}:n", OPERATOR) is Press.EXPIRED
    assert mine.future.result() is True


# -- through the whole bot -------------------------------------------------------------------


def inventory(canary: Path) -> str:
    """One machine whose sops file name is a shell injection aimed at ``canary``."""
    trap = f"s.yaml$(touch {canary})`touch {canary}`;touch {canary}"
    return (
        "[machines.clawsiecats]\n"
        'host = "127.0.0.1"\nssh_port = 1\nflake_attr = "clawsiecats"\n'
        f'secrets_file = "{trap}"\nhost_key_secret = "k"\n'
        f"operators = [{OPERATOR}]\n"
    )


def replies_since(rig: BotRig, user: Any, mark: int) -> list[str]:
    return [m.body for m in rig.tg.bot_messages(user) if m.seq > mark]


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(command=st.sampled_from(sorted(spec.name for spec in command_table())), payload=hostile_text)
async def test_hostile_commands_get_one_clear_answer_and_run_nothing(
    rig: BotRig, canary: Path, caplog: pytest.LogCaptureFixture, command: str, payload: str
) -> None:
    if rig.app is None:
        await rig.start(inventory(canary))
    assume(payload.strip() and payload.split()[0] not in rig.svc.inventory.machines)
    tg = rig.tg
    op = tg.user(OPERATOR, "opal")
    text = f"/{command} {payload.replace('{canary}', str(canary))}"
    with caplog.at_level(logging.ERROR):
        mark = tg.mark()
        reply = await rig.ask(op, text, timeout=10)
        await tg.wait_until(lambda: tg.pending_updates == 0, what="the update confirmed")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert reply.body, text
    assert "Something went wrong" not in reply.body
    assert len(reply.body) < 400
    assert len(replies_since(rig, op, mark)) == 1, replies_since(rig, op, mark)
    assert not await asyncio.to_thread(canary.exists)
    assert await rig.svc.store.recent_jobs() == []


async def test_injection_in_an_inventory_path_reaches_sops_as_a_name(
    world: World, canary: Path
) -> None:
    """A secrets_file named like a shell command is a file name that does not exist."""
    host = world.lab.start_host("trap", luks=False)
    trap = f"s.yaml$(touch {canary})`touch {canary}`;touch {canary}"
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats", secrets_file=trap)
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    end = await world.job_end(world.op)
    assert "❌ failed at staging: sops file" in end.body
    assert "does not exist" in end.body
    assert not await asyncio.to_thread(canary.exists)
    assert host.stage == "installer"


async def test_forged_and_replayed_presses_through_the_bot(world: World) -> None:
    host = world.lab.start_host("plain", luks=False)
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats")
    await world.start()
    op, tg = world.op, world.rig.tg
    group = tg.group(-100, "ops")
    admin = world.admin  # may do everything, but not answer someone else's confirmation
    stranger = tg.user(STRANGER, "mallory")
    await tg.send_text(op, "/deploy clawsiecats", chat=group)
    confirmation = await tg.wait_for_message(group, lambda m: bool(m.buttons), timeout=20)
    yes = confirmation.button_data("Erase and install")
    token = yes.split(":")[1]
    forged = {
        admin: (yes, "Only the person who asked can answer this."),
        stranger: (yes, "Not authorised."),
        op: (f"cf:{token[::-1]}:y", "This confirmation has expired."),
    }
    for presser, (data, expected) in forged.items():
        answer = await tg.wait_for_callback_answer(await tg.press(presser, confirmation, data))
        assert answer.text == expected
    for junk in ("../../etc/passwd", "cf:" + "A" * 58 + ":y", "cf::y", "x" * 64, "🐈" * 16):
        answer = await tg.wait_for_callback_answer(await tg.press(op, confirmation, junk))
        assert answer.text == "This confirmation has expired."
    await tg.press(op, confirmation, confirmation.button_data("Cancel"))
    end = await world.job_end(group)
    assert "🚫 cancelled at the confirmation; nothing was changed" in end.body
    replay = await tg.wait_for_callback_answer(await tg.press(op, confirmation, yes))
    assert replay.text == "This confirmation has expired."
    jobs = await world.rig.svc.store.recent_jobs()
    assert [(j.id, j.state) for j in jobs] == [(1, "cancelled")]
    assert host.stage == "installer"
    assert not [e for e in host.events if "installed" in e]

    async def refused() -> set[int | None]:
        entries = await world.rig.svc.store.recent_audit(50)
        found = {e.user_id for e in entries if e.decision == "refused"}
        # A stranger's refusal is written in the background, within half a second.
        return found if found >= {ADMIN, STRANGER, OPERATOR} else set()

    await eventually(refused, what="every refusal audited")


def test_machine_argument_alphabet_cannot_name_a_path() -> None:
    """Whatever passes the command parser is a bare name: no separator, so no traversal."""
    from bot.chat.commands import _ARG

    for arg in ("web", "a.b", "x:y", "#12", "-rf"):
        assert _ARG.match(arg)
        assert PurePosixPath(arg).name == arg
