"""A rollout's board: each machine's state and why, shown as counts, groups and lines,
and read back from the rollout's job events after a restart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from store import Job, Store

#: A machine's state in the rollout, in the order the counts are shown.
WAITING, UPDATING, UPDATED, UNCHANGED, ROLLED, FAILED, UNTOUCHED = (
    "waiting",
    "updating",
    "new generation",
    "already current",
    "rolled back",
    "failed, unchanged",
    "not touched",
)
MARKS = {
    WAITING: "⏳",
    UPDATING: "▶️",
    UPDATED: "✅",
    UNCHANGED: "➖",
    ROLLED: "↩️",
    FAILED: "❌",
    UNTOUCHED: "⏸",
}
MAX_NAMES = 30
#: A rollout's job events: each machine's state as it changes, read back after a restart.
MACHINE_EVENT = "machine"
MAX_REASON = 200
REASON = " — "


@dataclass
class Board:
    """Each machine's state and, once it ended, why; rendered as counts and names."""

    order: list[str]
    state: dict[str, str] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.order:
            self.state.setdefault(name, WAITING)

    def names(self, state: str) -> list[str]:
        return [n for n in self.order if self.state[n] == state]

    def counts(self) -> str:
        shown = [(s, len(self.names(s))) for s in MARKS]
        line = " · ".join(f"{MARKS[s]} {s} {n}" for s, n in shown if n)
        flying = self.names(UPDATING)
        if flying:
            line += f"\nIn flight: {_listed(flying)}"
        return line

    def result(self) -> str:
        """The three groups (and the rest), with each failure's reason."""
        lines = []
        for state in (UPDATED, UNCHANGED, ROLLED, FAILED, UPDATING, WAITING, UNTOUCHED):
            names = self.names(state)
            if not names:
                continue
            if state in (ROLLED, FAILED):
                lines.append(f"{MARKS[state]} {state} ({len(names)}):")
                lines += [f"• {n}: {self.why.get(n, '')[:MAX_REASON]}" for n in names[:10]]
            else:
                lines.append(f"{MARKS[state]} {state} ({len(names)}): {_listed(names)}")
        return "\n".join(lines)

    def detail(self) -> list[str]:
        """One line per machine, in the rollout's order: its state and, once ended, why."""
        lines = []
        for name in self.order:
            state = self.state[name]
            why = f" — {self.why[name][:MAX_REASON]}" if self.why.get(name) else ""
            lines.append(f"{MARKS[state]} {name}: {state}{why}")
        return lines


def _listed(names: Sequence[str]) -> str:
    more = len(names) - MAX_NAMES
    return ", ".join(names[:MAX_NAMES]) + (f" and {more} more" if more > 0 else "")


async def recorded(store: Store, job_id: int) -> Board:
    """The machines' last states (and reasons) a rollout recorded as its job events."""
    state: dict[str, str] = {}
    why: dict[str, str] = {}
    for event in await store.events(job_id):
        name, _, said = event.text.partition(": ")
        now, _, reason = said.partition(REASON)
        if event.kind == MACHINE_EVENT and now in MARKS:
            state[name] = now
            why[name] = reason
    return Board(list(state), state=state, why=why)


async def where_it_stood(store: Store, job: Job, waiting: Sequence[str]) -> str:
    """After a restart: each machine's last state the rollout recorded; those it never
    started (``waiting``: their jobs were still queued) are not touched, those under way
    are left to their guards."""
    board = await recorded(store, job.id)
    board = Board(
        [*board.order, *(n for n in waiting if n not in board.state)],
        state=board.state,
        why=board.why,
    )
    for name in board.names(WAITING):
        board.state[name] = UNTOUCHED
    flying = board.names(UPDATING)
    text = board.result().replace(f"{MARKS[UPDATING]} {UPDATING}", f"{MARKS[UPDATING]} under way")
    if flying:
        text += (
            "\nEach machine under way switches back by itself unless its new system was "
            "confirmed; /status shows where it stands."
        )
    return text
