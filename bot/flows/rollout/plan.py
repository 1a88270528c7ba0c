"""Which machines a rollout updates, and why the others named are left out.

``/deploy tag:web``, ``/deploy a b c`` and ``/deploy all`` name machines; a rollout takes
those the asker operates that answer with their pinned system key and have no job running.
Each one left out is named with its reason, so the person confirming sees the whole picture
before anything starts (docs/updates.md, "Rollouts").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from bot.chat.commands import tag_in
from bot.config.inventory import TAG, Inventory, Machine
from bot.core.text import printable
from bot.remote.fleet import Fleet
from bot.remote.place import Place
from store import Store

ALL = "all"
#: Machines looked at together while planning (each look is a login or two).
LOOKS_AT_ONCE = 8
MAX_SHOWN = 40


@dataclass(frozen=True)
class Skip:
    machine: str
    why: str


@dataclass(frozen=True)
class RolloutPlan:
    """The machines to update (in order: canaries first) and those left out."""

    label: str
    machines: tuple[Machine, ...]
    skipped: tuple[Skip, ...] = ()
    #: Machines of a named tag that the asker does not operate: counted, never named.
    hidden: int = 0

    @property
    def canaries(self) -> tuple[Machine, ...]:
        """The ``canary = true`` machines, else the first one."""
        marked = tuple(m for m in self.machines if m.canary)
        return marked or self.machines[:1]

    @property
    def rest(self) -> tuple[Machine, ...]:
        first = {m.name for m in self.canaries}
        return tuple(m for m in self.machines if m.name not in first)

    def describe(self, parallel: int) -> str:
        """The question: what is updated, in which order, and what is left out."""
        lines = [f"Rollout of {self.label}: update {len(self.machines)} machines?"]
        lines.append(f"Canary first: {_names(self.canaries)}")
        if self.rest:
            lines.append(f"Then in waves of {parallel}: {_names(self.rest)}")
        lines.append(
            "Every system is built; nothing on the machines changed yet. Each machine "
            "switches back by itself unless confirmed within its rollback timeout; the first "
            "failure stops the rollout."
        )
        return "\n".join(lines + self.left_out())

    def left_out(self) -> list[str]:
        """The machines named but skipped, each with its reason."""
        if not (self.skipped or self.hidden):
            return []
        lines = [f"Skipped ({len(self.skipped) + self.hidden}):"]
        lines += [f"• {s.machine}: {s.why}" for s in self.skipped[:MAX_SHOWN]]
        if len(self.skipped) > MAX_SHOWN:
            lines.append(f"• … and {len(self.skipped) - MAX_SHOWN} more")
        if self.hidden:
            lines.append(f"• {self.hidden} more of the tag: not yours")
        return lines


def _names(machines: Sequence[Machine]) -> str:
    names = [m.name for m in machines]
    shown = ", ".join(names[:MAX_SHOWN])
    return shown + (f" and {len(names) - MAX_SHOWN} more" if len(names) > MAX_SHOWN else "")


def select(
    args: Sequence[str], inventory: Inventory, *, user_id: int, admin: bool
) -> tuple[list[Machine], list[Skip], int]:
    """The machines the words name that the asker may act on (in inventory order, each
    once), those named but refused, and how many of a tag's are someone else's."""

    def mine(machine: Machine) -> bool:
        return admin or user_id in machine.operators

    chosen: dict[str, Machine] = {}
    skipped: dict[str, Skip] = {}
    hidden: set[str] = set()
    for word in args:
        if word == ALL:
            found = list(inventory) if admin else []
            if not admin:
                skipped[word] = Skip(word, "all is for admins only")
        elif (tag := tag_in(word)) is not None:
            if not TAG.fullmatch(tag):
                skipped[word] = Skip(printable(word, 40), "not a tag")
                continue
            tagged = inventory.tagged(tag)
            found = [m for m in tagged if mine(m)]
            hidden |= {m.name for m in tagged if not mine(m)}
            if not found:
                skipped[word] = Skip(word, "no machine of yours carries it")
        else:
            machine = inventory.get(word)
            if machine is None or not mine(machine):
                # Operators learn nothing about whether another's machine exists.
                why = "unknown" if admin else "unknown or not yours"
                skipped[word] = Skip(printable(word, 40), why)
                continue
            found = [machine]
        for machine in found:
            chosen.setdefault(machine.name, machine)
    order = [m for m in inventory if m.name in chosen]
    hidden -= set(chosen)
    return order, list(skipped.values()), len(hidden)


async def read_plan(
    args: Sequence[str],
    inventory: Inventory,
    *,
    user_id: int,
    admin: bool,
    fleet: Fleet,
    store: Store,
) -> RolloutPlan:
    """Select, then look at each machine: only an installed system with no job goes in."""
    chosen, skipped, hidden = select(args, inventory, user_id=user_id, admin=admin)
    gate = asyncio.Semaphore(LOOKS_AT_ONCE)

    async def why_not(machine: Machine) -> str | None:
        async with gate:
            return await _why_not(machine, fleet, store)

    reasons = await asyncio.gather(*(why_not(m) for m in chosen))
    ready = tuple(m for m, why in zip(chosen, reasons, strict=True) if why is None)
    skipped += [Skip(m.name, why) for m, why in zip(chosen, reasons, strict=True) if why]
    label = printable(" ".join(args), 60)
    return RolloutPlan(label=label, machines=ready, skipped=tuple(skipped), hidden=hidden)


async def _why_not(machine: Machine, fleet: Fleet, store: Store) -> str | None:
    """Why ``machine`` cannot be updated now, or None."""
    running = await store.active_job(machine.name)
    if running is not None:
        return f"job {running.id} ({running.kind}) is running"
    pins = await fleet.pins(machine)
    if pins.conflicts:
        return f"its keys contradict each other ({'; '.join(pins.conflicts)[:120]})"
    if not pins.system:
        return "not installed: no pinned system key (/deploy it alone to install)"
    seen = await (await fleet.target(machine)).locate()
    if seen.place is Place.INITRD:
        return f"waits in its initrd: /unlock {machine.name} first"
    if seen.place is not Place.SYSTEM:
        return f"does not answer as its installed system ({seen.place.value})"
    return None
