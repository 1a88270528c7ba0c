"""Commands are declared once, and the README's table says who may run each."""

from __future__ import annotations

import re
from pathlib import Path

from bot.chat.commands import Arg, Need, Right
from handlers import FAMILIES, command_table
from handlers.plumbing.registry import specs_of

README = Path(__file__).resolve().parents[2] / "README.md"
WHO = {"anyone known": Right.USER, "its operators": Right.MACHINE, "admins": Right.ADMIN}
ROW = re.compile(r"^\| `(/[a-z]+)[^`]*` \| ([a-z ]+) \|")


def readme_rights() -> dict[str, Right]:
    found: dict[str, Right] = {}
    for line in README.read_text().splitlines():
        match = ROW.match(line)
        if match:
            name = match.group(1)[1:]
            assert name not in found, f"/{name} twice in the README's table"
            found[name] = WHO[match.group(2)]
    return found


def test_every_command_has_exactly_one_spec() -> None:
    declared = [spec.name for family in FAMILIES for spec, _ in specs_of(family)]
    assert len(declared) == len(set(declared))
    assert set(declared) == {spec.name for spec in command_table()}


def test_the_readme_table_lists_every_command_with_its_right() -> None:
    table = {spec.name: spec.right for spec in command_table()}
    assert readme_rights() == table


def test_the_usage_shown_matches_the_argument() -> None:
    table = command_table()
    for line in README.read_text().splitlines():
        match = ROW.match(line)
        if not match:
            continue
        shown = line.split("`")[1].replace("\\|", "|")  # a | in a table cell is escaped
        spec = table.get(match.group(1)[1:])
        assert spec is not None
        assert shown == spec.usage


def test_machine_commands_need_a_machine_and_job_commands_a_job() -> None:
    for spec in command_table():
        if spec.arg in (Arg.MACHINE, Arg.JOB):
            assert spec.right is Right.MACHINE, spec.name
        if spec.needs - {Need.PRIVATE_CHAT}:  # what a machine must be needs a machine
            assert spec.arg is Arg.MACHINE, spec.name


def test_needs_are_where_the_flows_need_them() -> None:
    table = command_table()

    def needs(name: str) -> frozenset[Need]:
        spec = table.get(name)
        assert spec is not None
        return spec.needs

    assert needs("unlock") == {Need.LUKS}
    assert needs("reinstall") == {Need.INSTALLED_BY_BOT, Need.PRIVATE_CHAT}
    for private in ("status", "machines", "log", "audit"):  # operator data
        assert Need.PRIVATE_CHAT in needs(private), private
    assert Need.PINNED in needs("reboot")
    assert Need.PINNED in needs("check")
    assert needs("deploy") == frozenset()
    # Operator data stays out of groups.
    for private in ("status", "machines", "log", "audit"):
        assert Need.PRIVATE_CHAT in needs(private), private
