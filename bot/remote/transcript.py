"""A prompt's output as the bot reads it: bounded, searched for markers, and zeroed after.

An initrd's prompt may echo an early keystroke, so what it printed is kept in one
``bytearray`` of at most :data:`READ_LIMIT` bytes that is zeroed (``wipe``) when the relay
ends, never in copies that outlive it.
"""

from __future__ import annotations

import asyncio
import time

import asyncssh

READ_LIMIT = 64 * 1024


class Transcript:
    """Reads a remote process's output until one of some markers shows up."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.process = process
        self.seen = bytearray()
        self._cursor = 0
        self.ended = False

    async def until(self, markers: tuple[bytes, ...], timeout: float) -> bytes | None:
        """The first marker in output not yet consumed; None at EOF or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [(self.seen.find(m, self._cursor), m) for m in markers]
            hits = [(index, m) for index, m in hits if index >= 0]
            if hits:
                index, marker = min(hits)
                self._cursor = index + len(marker)
                return marker
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.ended:
                return None
            try:
                chunk = await asyncio.wait_for(self.process.stdout.read(4096), remaining)
            except TimeoutError:
                return None
            if not chunk:
                self.ended = True
                return None
            if len(self.seen) + len(chunk) > READ_LIMIT:
                drop = len(self.seen) + len(chunk) - READ_LIMIT
                self.seen[:drop] = bytes(drop)
                del self.seen[:drop]
                self._cursor = max(0, self._cursor - drop)
            self.seen += chunk

    def since(self, start: int, end: int) -> str:
        return bytes(self.seen[start:end]).decode("utf-8", "replace")

    @property
    def cursor(self) -> int:
        return self._cursor

    def wipe(self) -> None:
        self.seen[:] = bytes(len(self.seen))
        self.seen.clear()
