"""One progress message per job, edited in place and throttled for Telegram's limits.

Phases render as a checklist; the current one is marked, with the elapsed time and the
last line of output. Edits happen at most every ``interval`` seconds — a burst of 500
output lines costs one edit, not 500 — and the final state is always shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from bot.chat.port import ChatPort, Keyboard, MessageRef
from bot.core.durations import format_duration

MARKS = {"done": "✅", "current": "▶️", "todo": "▫️", "failed": "❌", "skipped": "➖"}
LAST_LINE = 180
HEARTBEAT = 30.0
MAX_TEXT = 4096  # Telegram's limit for a message's text


@dataclass
class ProgressState:
    title: str
    phases: list[str]
    status: dict[str, str] = field(default_factory=dict)
    current: str | None = None
    last_line: str = ""
    notes: list[str] = field(default_factory=list)
    #: A job's own summary under the checklist (a rollout's counts), cut to fit the message.
    board: str = ""
    result: str | None = None
    outcome: str = ""
    #: Buttons kept under the message through every edit (a rollout's detail).
    buttons: Keyboard = ()
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def render(self) -> str:
        elapsed = (self.finished or time.monotonic()) - self.started
        if self.outcome:
            head = f"{self.title} — {self.outcome} after {format_duration(elapsed)}"
        else:
            head = f"{self.title} — running, {format_duration(elapsed)}"
        lines = [head]
        for phase in self.phases:
            mark = MARKS[self.status.get(phase, "todo")]
            lines.append(f"{mark} {phase}")
        lines += self.notes[-5:]
        if self.board:
            lines.append(self.board)
        if self.result:
            lines.append(self.result)
        elif self.last_line:
            lines.append(f"› {self.last_line[:LAST_LINE]}")
        text = "\n".join(lines)
        return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class Progress:
    """Keeps a job's message current without ever blocking the job on Telegram."""

    def __init__(
        self, chat: ChatPort, chat_id: int | None, state: ProgressState, interval: float = 3.0
    ) -> None:
        self.chat = chat
        self.chat_id = chat_id
        self.state = state
        self.interval = interval
        self.ref: MessageRef | None = None
        self.edits = 0
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._finishing = False

    async def start(self) -> MessageRef | None:
        if self.chat_id is not None:
            self.ref = await self.chat.post(self.chat_id, self.state.render())
        self._task = asyncio.create_task(self._pump(), name="progress")
        return self.ref

    def phase(self, name: str) -> None:
        """Mark ``name`` current and every earlier phase done."""
        if name not in self.state.phases:
            self.state.phases.append(name)
        for phase in self.state.phases:
            if phase == name:
                break
            if self.state.status.get(phase, "todo") in ("todo", "current"):
                self.state.status[phase] = "done"
        self.state.status[name] = "current"
        self.state.current = name
        self._dirty.set()

    def skip(self, name: str) -> None:
        self.state.status[name] = "skipped"
        self._dirty.set()

    def line(self, text: str) -> None:
        if text.strip():
            self.state.last_line = text.strip()
            self._dirty.set()

    def show_board(self, text: str) -> None:
        self.state.board = text
        self._dirty.set()

    def set_buttons(self, buttons: Keyboard) -> None:
        self.state.buttons = buttons
        self._dirty.set()

    def note(self, text: str) -> None:
        self.state.notes.append(text)
        self._dirty.set()

    async def finish(self, result: str, *, outcome: str) -> None:
        """Stop throttling and show the end state (``outcome``: succeeded, failed …) at once."""
        ok = outcome == "succeeded"
        self.state.outcome = outcome
        current = self.state.current
        if current is not None:
            self.state.status[current] = "done" if ok else "failed"
        if ok:
            for phase in self.state.phases:
                if self.state.status.get(phase, "todo") in ("todo", "current"):
                    self.state.status[phase] = "done"
        self.state.result = result
        self.state.finished = time.monotonic()
        if self._task is not None:
            # The flag ends the pump even if its cancellation is lost (asyncio.wait_for can
            # swallow one on Python 3.11); wait() lets a cancellation of finish() through.
            self._finishing = True
            self._dirty.set()
            self._task.cancel()
            await asyncio.wait([self._task])
        if not await self._render():
            # The message is gone or Telegram kept failing: the end must still be said.
            self.ref = None
            await self._render()

    async def _pump(self) -> None:
        while not self._finishing:
            # Re-render now and then even when idle, so the elapsed time keeps moving.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), HEARTBEAT)
            self._dirty.clear()
            if self._finishing:
                return
            await self._render()
            await asyncio.sleep(self.interval)  # the throttle: at most one edit per interval

    async def _render(self) -> bool:
        """Show the current state; a message that could not be posted at start is posted now."""
        if self.chat_id is None:
            return True
        buttons = self.state.buttons
        if self.ref is None:
            self.ref = await self.chat.post(self.chat_id, self.state.render(), buttons=buttons)
            return self.ref is not None
        self.edits += 1
        return await self.chat.edit(self.ref, self.state.render(), buttons=buttons)
