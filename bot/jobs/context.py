"""What a job's work sees: its ``JobContext`` (phases, output, notes, hidden secrets) and
the two ways it ends early, ``JobFailed`` and ``JobCancelled``. The runner
(``bot.jobs.runner``) makes the context and turns how the work ended into the job's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from bot.chat.port import ChatPort
from bot.chat.verdict import Verdict
from bot.core.secret import Secret
from bot.jobs.joblog import JobLog
from bot.jobs.progress import Progress
from store import Job, Store
from store.database import StoreUnavailable

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """The job stops here; ``reason`` is shown to the user (never a secret)."""

    def __init__(self, reason: str, *, phase: str | None = None) -> None:
        self.reason = reason
        self.phase = phase
        super().__init__(reason)


class JobCancelled(Exception):
    """The job ended without doing harm because someone said no (or nobody said yes)."""


def require_yes(verdict: Verdict) -> None:
    """Go on only after a confirmation; otherwise end the job, saying nothing changed."""
    if not verdict.yes:
        raise JobCancelled(f"{verdict.why_not}; nothing was changed")


@dataclass
class Outcome:
    """What the job reports at the end (``summary`` is shown under the checklist)."""

    summary: str


class JobContext:
    """What a running job may do: report phases and output, hide secrets, fail."""

    def __init__(
        self, job: Job, store: Store, chat: ChatPort, log_file: JobLog, progress: Progress
    ) -> None:
        self.job = job
        self.store = store
        self.chat = chat
        self.log = log_file
        self.progress = progress
        self.started = time.monotonic()
        self._told: set[str] = set()
        # The job's ending, once begun: a cancellation arriving meanwhile waits for it
        # rather than ending the job a second time.
        self.ending: asyncio.Future[None] | None = None
        # Why /cancel would not help now (a guard on the machine decides), or None.
        self.cancel_refused: str | None = None
        # Set by a job that stops by itself when cancelled (a rollout starts no new
        # machine, the ones under way finish behind their guards); None: the task is cancelled.
        self.on_cancel: Callable[[], None] | None = None

    @property
    def phase(self) -> str | None:
        return self.progress.state.current

    async def enter(self, phase: str) -> None:
        self._write(f"=== {phase}")
        self.progress.phase(phase)
        await self.bookkeep(self.store.update_job(self.job.id, phase=phase))
        await self.bookkeep(self.store.add_event(self.job.id, "phase", phase))

    async def bookkeep(self, write: Awaitable[object]) -> None:
        """A write of the job's history; a locked database must not stop a half-done install."""
        try:
            await write
        except StoreUnavailable as exc:
            log.warning("job %s: could not record its progress: %s", self.job.id, exc)
            self._tell_once(f"the database is unavailable ({exc}): the job's history has gaps")

    def _write(self, text: str) -> str:
        line = self.log.write(text)
        if self.log.write_error:
            self._tell_once(f"{self.log.write_error}; the job goes on")
        return line

    def _tell_once(self, text: str) -> None:
        if text not in self._told:
            self._told.add(text)
            self.progress.note(f"⚠️ {text}")

    def refuse_cancel(self, why: str | None) -> None:
        """From now on /cancel answers ``why`` instead of stopping the job (None: it stops)."""
        self.cancel_refused = why

    def skip(self, phase: str) -> None:
        self.progress.skip(phase)

    def output(self, text: str) -> str:
        """One line of a command's output: logged, shown as the last line; returns it redacted."""
        line = self._write(text)
        self.progress.line(line)
        return line

    async def note(self, text: str) -> None:
        """A warning or fact worth keeping in the message and the job's events."""
        line = self.log.clean(text)
        self._write(f"note: {line}")
        self.progress.note(f"⚠️ {line}")
        await self.bookkeep(self.store.add_event(self.job.id, "note", line))

    def hide(self, secret: Secret) -> None:
        self.log.hide(secret)

    def fail(self, reason: str) -> JobFailed:
        return JobFailed(self.log.clean(reason), phase=self.phase)

    @contextlib.contextmanager
    def failing(self, what: str, *errors: type[Exception]) -> Iterator[None]:
        """Let ``errors`` raised inside end the job as failed: "``what``: the error"."""
        try:
            yield
        except errors as exc:
            raise self.fail(f"{what}: {exc}" if what else str(exc)) from None


JobWork = Callable[[JobContext], Awaitable[Outcome]]
