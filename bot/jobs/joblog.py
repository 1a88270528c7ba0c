"""A job's log file: every line redacted of the job's secrets, mode 0600, never fatal.

A full disk must not kill a deploy that is halfway through formatting a machine: when a
write fails the log says so once, keeps the tail in memory, and the job goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections import deque
from pathlib import Path

from bot.core.secret import Secret, redact
from bot.core.text import printable

log = logging.getLogger(__name__)
TAIL_LINES = 40
MAX_LINE = 4000
# A flooding target must not fill the disk: past this many bytes only the last TAIL_KEEP
# lines are kept (in memory), and the file ends with what was dropped and that tail.
MAX_LOG_BYTES = 32 * 1024 * 1024
TAIL_KEEP = 400
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
        self.written = 0
        self.dropped = 0
        self._held: deque[str] = deque(maxlen=TAIL_KEEP)
        # Copies of the job's secrets, owned by the log: a secret the job wipes early (an
        # unlock answer, once relayed) is still redacted from whatever the target says
        # later. They are wiped when the log closes, at the job's end.
        self._needles: list[Secret] = []
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="replace")

    def hide(self, secret: Secret) -> None:
        """Redact ``secret`` from every later line until the job ends (and never write it)."""
        self.secrets.append(secret)
        if secret and not secret.wiped:
            self._needles.append(Secret(secret.reveal()))

    def clean(self, text: str) -> str:
        """``text`` bounded, printable and redacted of every secret the job has known."""
        live = [s for s in (*self.secrets, *self._needles) if not s.wiped]
        text = redact(text, live) if live else text
        return printable(text, MAX_LINE, newlines=True)

    def write(self, text: str) -> str:
        """Write one line (already without its newline); returns the redacted text."""
        line = self.clean(text.rstrip("\n"))
        self.tail.append(line)
        self.lines += 1
        if self.written >= MAX_LOG_BYTES:
            if len(self._held) == self._held.maxlen:
                self.dropped += 1
            self._held.append(line)
            return line
        if self.write_error is None:
            try:
                self._file.write(line + "\n")
                self._file.flush()
                self.written += len(line.encode("utf-8", "replace")) + 1
            except OSError as exc:
                self.write_error = f"the job log could not be written ({exc.strerror})"
                log.warning("job log %s: %s", self.path, self.write_error)
        return line

    def close(self) -> None:
        if self._held and self.write_error is None:
            with contextlib.suppress(OSError):
                self._file.write(
                    f"[... {self.dropped} lines dropped: the log passed "
                    f"{MAX_LOG_BYTES // (1024 * 1024)} MiB; its last {len(self._held)} "
                    "lines follow ...]\n" + "\n".join(self._held) + "\n"
                )
            self._held.clear()
        for needle in self._needles:
            needle.wipe()
        try:
            self._file.close()
        except OSError as exc:
            self.write_error = (
                self.write_error or f"the job log could not be closed ({exc.strerror})"
            )
