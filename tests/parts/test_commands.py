"""Command parsing: hostile and malformed input gets a one-line answer, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.chat.commands import CommandError
from handlers import command_table

TABLE = command_table()
parse_command = TABLE.parse


def test_parses_machine_and_job_arguments() -> None:
    assert parse_command("/deploy clawsiecats").machine == "clawsiecats"
    assert parse_command("/status").machine is None
    assert parse_command("/log #12").job_id == 12
    assert parse_command("/machines@deploybot", "deploybot").spec.name == "machines"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("/frobnicate", "Unknown command /frobnicate"),
        ("/deploy", "Missing argument. Usage: /deploy <machine…>"),
        ("/unlock a b", "Too many arguments. Usage: /unlock <machine>"),
        ("/machines extra", "Too many arguments"),
        ("/status " + "x" * 5000, "too long"),
        ("/status web\x00", "control characters"),
        ("/status web\u202e", "control characters"),
        ("/deploy ../../etc", "not a name I know"),
        ("/deploy $(reboot)", "not a name I know"),
        ("/log abc", "a job number"),
        ("hello", "Not a command"),
    ],
)
def test_bad_input_gets_one_line(text: str, answer: str) -> None:
    with pytest.raises(CommandError, match=None) as caught:
        parse_command(text)
    message = str(caught.value)
    assert answer in message
    assert "\n" not in message
    assert len(message) < 200


@given(st.text(max_size=300))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        parsed = parse_command("/" + text)
    except CommandError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert "\n" not in message
        return
    assert parsed.spec.name in TABLE
    for arg in parsed.args:
        assert (
            arg.lstrip("#")
            .replace("_", "")
            .replace("-", "")
            .replace(".", "")
            .replace(":", "")
            .replace("@", "")
            .isalnum()
        )
