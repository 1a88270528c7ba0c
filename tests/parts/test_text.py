"""The one range of unsafe characters: what printable() removes is what has_control() refuses."""

from __future__ import annotations

import pytest

from bot.core.text import ELLIPSIS, has_control, one_line, printable

UNSAFE = [
    "\x00",
    "\x07",
    "\x1b",
    "\x1f",
    "\x7f",
    "\x85",
    "\x9f",
    "\u061c",
    "\u200b",
    "\u200f",
    "\u202a",
    "\u202e",
    "\u2066",
    "\u2069",
    "\ufeff",
    "\u00ad",  # soft hyphen: a format character (Cf) outside the named ranges
]


@pytest.mark.parametrize("ch", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
def test_every_unsafe_character_is_removed_and_refused(ch: str) -> None:
    assert printable(f"a{ch}b") == "ab"
    assert printable(f"a{ch}b", newlines=True) == "ab"
    assert has_control(f"a{ch}b")


@pytest.mark.parametrize("text", ["plain", "é ü ß", "日本", "a-b_c.d", "🔐 disk"])
def test_ordinary_text_passes_untouched(text: str) -> None:
    assert printable(text) == text
    assert not has_control(text)


def test_tabs_and_newlines_are_shown_as_space_but_refused_in_values() -> None:
    assert printable("a\tb\nc\r\nd") == "a b c d"
    assert printable("a\nb\r\nc", newlines=True) == "a\nb\nc"
    assert has_control("a\tb")
    assert has_control("a\nb")


def test_a_whole_escape_sequence_goes_at_once() -> None:
    assert printable("ok\x1b[2J\x1b[1;1Hall good") == "okall good"
    assert printable("\x1b]0;title\x07x") == "x"


def test_bounded_with_an_ellipsis() -> None:
    assert printable("abcdef", 4) == "abc" + ELLIPSIS
    assert printable("abcd", 4) == "abcd"


def test_one_line_folds_white_space_and_bounds() -> None:
    assert one_line("  error:\n\tno  such\x1b[31m file  ") == "error: no such file"
    assert one_line("x" * 500, 10) == "x" * 9 + ELLIPSIS
