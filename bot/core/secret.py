"""A container for secret values that refuses to leak by accident.

Passphrases and private keys travel through logs, exceptions, reprs and pickles far too
easily. ``Secret`` prints as ``Secret(***)``, cannot be pickled or copied, compares in
constant time only through :meth:`Secret.matches`, and zeroes its buffer on :meth:`wipe`.
:func:`redact` scrubs known values out of text that is about to be logged or shown.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from types import TracebackType
from typing import NoReturn, Self

__all__ = ["MASK", "Redactor", "Secret", "redact"]

MASK = "***"
_MIN_FRAGMENT = 8
_MAX_FRAGMENTS = 64


class Secret:
    """Holds secret bytes; the only way out is :meth:`reveal`."""

    __slots__ = ("__weakref__", "_buf", "_wiped")

    def __init__(self, value: bytes | bytearray | memoryview | str) -> None:
        data = value.encode("utf-8") if isinstance(value, str) else value
        self._buf = bytearray(data)
        self._wiped = False

    def reveal(self) -> bytes:
        """Return the value; raises ValueError once wiped."""
        if self._wiped:
            raise ValueError("secret was wiped")
        return bytes(self._buf)

    def reveal_str(self) -> str:
        """Return the value decoded as UTF-8 (strict)."""
        return self.reveal().decode("utf-8")

    def matches(self, other: Secret | bytes | str) -> bool:
        """Constant-time comparison with another secret or value."""
        if isinstance(other, Secret):
            other_bytes = other.reveal()
        elif isinstance(other, str):
            other_bytes = other.encode("utf-8")
        else:
            other_bytes = bytes(other)
        return hmac.compare_digest(self.reveal(), other_bytes)

    def wipe(self) -> None:
        """Zero the buffer (best effort: copies handed out by reveal() stay)."""
        for i in range(len(self._buf)):
            self._buf[i] = 0
        self._buf.clear()
        self._wiped = True

    @property
    def wiped(self) -> bool:
        return self._wiped

    def __len__(self) -> int:
        return len(self._buf)

    def __bool__(self) -> bool:
        return not self._wiped and len(self._buf) > 0

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return "Secret(***)"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("Secret cannot be pickled or copied")

    def __getstate__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled or copied")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()

    def __del__(self) -> None:
        buf = getattr(self, "_buf", None)
        if buf is not None:
            for i in range(len(buf)):
                buf[i] = 0


def _needles(secret: Secret | bytes | str) -> list[str]:
    if isinstance(secret, Secret):
        if secret.wiped:
            return []
        raw = secret.reveal()
    elif isinstance(secret, str):
        raw = secret.encode("utf-8")
    else:
        raw = bytes(secret)
    text = raw.decode("utf-8", errors="replace")
    found = {text, text.strip()}
    # A multi-line value (a private key) may show up one line at a time.
    lines = [line.strip() for line in text.split("\n")]
    if len(lines) <= _MAX_FRAGMENTS:
        found.update(line for line in lines if len(line) >= _MIN_FRAGMENT)
    return [n for n in found if n]


class Redactor:
    """Scrubs a fixed set of secrets from many lines (needles computed once)."""

    __slots__ = ("_needles",)

    def __init__(self, secrets: Iterable[Secret | bytes | str]) -> None:
        needles: set[str] = set()
        for secret in secrets:
            needles.update(_needles(secret))
        self._needles = sorted(needles, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            text = text.replace(needle, MASK)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._needles)} values)"


def redact(text: str, secrets: Iterable[Secret | bytes | str]) -> str:
    """Replace every occurrence of each known secret value (and long lines of it) by ***."""
    return Redactor(secrets)(text)
