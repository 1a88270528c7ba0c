"""Text from targets, inventories and chat users, made safe to show and to store.

A target's ``/etc/os-release``, a health check's error or a job's output line can carry
terminal escapes (clear the screen, move the cursor, print a fake "all good") and
bidirectional overrides that reorder what a reader sees. Everything shown in chat, written
to the database or the logs, or printed on a terminal goes through :func:`printable` first.
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 controls (ESC starts terminal sequences), DEL, and the bidi formatting marks:
# the one range of characters nothing shown, stored or typed may hold.
_CONTROLS = "\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
_CONTROL = re.compile(f"[{_CONTROLS}]")
_CONTROL_BUT_NEWLINE = re.compile(f"(?!\n)[{_CONTROLS}]")
# A whole ANSI escape sequence goes at once, so no "[2J" is left behind.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
ELLIPSIS = "…"


def printable(text: str, limit: int | None = None, *, newlines: bool = False) -> str:
    """``text`` without control, escape or bidi characters, at most ``limit`` characters.

    Tabs become spaces; newlines are kept only with ``newlines=True`` (otherwise they
    become spaces, so one remote line cannot pose as several). Other format characters
    (category Cf) go too. A cut text ends with an ellipsis.
    """
    cleaned = _ANSI.sub("", text)
    cleaned = cleaned.replace("\t", " ")
    if not newlines:
        cleaned = cleaned.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    cleaned = (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub("", cleaned)
    if any(unicodedata.category(ch) == "Cf" for ch in cleaned):
        cleaned = "".join(ch for ch in cleaned if unicodedata.category(ch) != "Cf")
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: max(0, limit - 1)] + ELLIPSIS
    return cleaned


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control, escape, bidi or format character (tab and newline too).

    For values that are refused rather than cleaned: an inventory string, a key line, a
    secret's name. The range is the one :func:`printable` removes.
    """
    return bool(_CONTROL.search(text)) or any(unicodedata.category(ch) == "Cf" for ch in text)


def one_line(text: str, limit: int = 160) -> str:
    """``text`` as one printable line: runs of white space folded to one space, bounded."""
    return printable(" ".join(text[: limit * 4].split()), limit)


def clip(text: str, limit: int, *, marker: str = "[… {dropped} characters dropped …]") -> str:
    """``text`` cut to about ``limit`` characters keeping its head and tail, saying so."""
    if len(text) <= limit:
        return text
    keep = max(0, limit // 2)
    dropped = len(text) - 2 * keep
    return text[:keep] + marker.format(dropped=dropped) + text[len(text) - keep :]
