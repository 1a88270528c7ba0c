"""Telegram's HTML parse_mode: strip the supported tags, decode entities, refuse the rest."""

from __future__ import annotations

import html
import re

from .state import JSON, utf16_len

ENTITY_BY_TAG = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}

_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)?([^<>]*)>")
_ENTITY = re.compile(r"&(#[0-9]+|#x[0-9A-Fa-f]+|lt|gt|amp|quot);")
_HREF = re.compile(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")


class ParseError(ValueError):
    """Raised with Telegram's wording after ``Bad Request: can't parse entities: ``."""


def parse_html(source: str) -> tuple[str, list[JSON]]:
    """Return the visible text and its entities, or raise ParseError like Telegram would."""
    out: list[str] = []
    entities: list[JSON] = []
    stack: list[tuple[str, int, JSON]] = []
    length = 0
    pos = 0
    while pos < len(source):
        char = source[pos]
        if char == "<":
            match = _TAG.match(source, pos)
            offset = len(source[:pos].encode())
            if match is None:
                raise ParseError(f"Unclosed start tag at byte offset {offset}")
            closing, name, attrs = match.group(1), (match.group(2) or "").lower(), match.group(3)
            if name not in ENTITY_BY_TAG:
                kind = "end" if closing else "start"
                raise ParseError(f'Unsupported {kind} tag "{name}" at byte offset {offset}')
            if closing:
                if not stack or stack[-1][0] != name:
                    raise ParseError(
                        f'Unmatched end tag at byte offset {offset}, expected "</{stack[-1][0]}>"'
                        if stack
                        else f"Unexpected end tag at byte offset {offset}"
                    )
                _, start, done = stack.pop()
                if length > start:
                    done.update(offset=start, length=length - start)
                    entities.append(done)
            else:
                entity: JSON = {"type": ENTITY_BY_TAG[name]}
                if name == "a":
                    href = _HREF.search(attrs)
                    entity["url"] = next((g for g in href.groups() if g), "") if href else ""
                stack.append((name, length, entity))
            pos = match.end()
            continue
        if char == "&":
            match = _ENTITY.match(source, pos)
            if match is not None:
                decoded = html.unescape(match.group(0))
                out.append(decoded)
                length += utf16_len(decoded)
                pos = match.end()
                continue
        out.append(char)
        length += utf16_len(char)
        pos += 1
    if stack:
        raise ParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities
