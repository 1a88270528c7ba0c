"""A job's log file: every line redacted of the job's secrets, mode 0600, never fatal.

A full disk must not kill a deploy that is halfway through formatting a machine: when a
write fails the log says so once, keeps the tail in memory, and the job goes on.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import deque
from pathlib import Path

from bot.core.secret import Secret, redact

log = logging.getLogger(__name__)
TAIL_LINES = 40
MAX_LINE = 4000
# Telegram takes documents up to 50 MB; a longer log is sent as its last part.
MAX_DOCUMENT = 45 * 1024 * 1024
CUT_NOTE = b"... (the start of this log was cut: it is longer than Telegram takes)\n"


def read_for_sending(path: Path, limit: int = MAX_DOCUMENT) -> bytes | None:
    """The log file's bytes to send as a document, or None when it is not a readable file.

    Only a regular file is read (a log path that became something else must not make the
    bot read for ever), and at most ``limit`` bytes: the end, where the failure is.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            if info.st_size <= limit:
                return handle.read(limit)
            handle.seek(info.st_size - limit + len(CUT_NOTE))
            return CUT_NOTE + handle.read(limit - len(CUT_NOTE))
        except OSError:
            return None


class JobLog:
    """Append-only log of one job; ``tail`` is kept in memory for progress and /log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.secrets: list[Secret] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.write_error: str | None = None
        self.lines = 0
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="replace")

    def hide(self, secret: Secret) -> None:
        """Redact ``secret`` from every later line (and never write it)."""
        self.secrets.append(secret)

    def clean(self, text: str) -> str:
        live = [s for s in self.secrets if not s.wiped]
        text = text[:MAX_LINE] + (" …" if len(text) > MAX_LINE else "")
        return redact(text, live) if live else text

    def write(self, text: str) -> str:
        """Write one line (already without its newline); returns the redacted text."""
        line = self.clean(text.rstrip("\n"))
        self.tail.append(line)
        self.lines += 1
        if self.write_error is None:
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as exc:
                self.write_error = f"the job log could not be written ({exc.strerror})"
                log.warning("job log %s: %s", self.path, self.write_error)
        return line

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            self.write_error = (
                self.write_error or f"the job log could not be closed ({exc.strerror})"
            )
