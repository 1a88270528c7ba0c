"""The two-person rule for erasing a disk (inventory ``erase_approval = true``).

The requester's own confirmation proves only that someone holds their Telegram session.
With the rule on, a second person — another operator of the machine or an admin — must
approve in their private chat before anything is erased: the first "Approve" wins, any
"Refuse" stops the job, silence until the timeout stops it too. Every outcome is audited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from bot.chat.asker import Asker
from bot.chat.verdict import Verdict
from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.jobs.context import JobCancelled
from store import Store


def approvers(machine: Machine, admins: Iterable[int], requester: int) -> list[int]:
    """Who may approve: the machine's operators and the admins, never the requester."""
    return sorted((set(machine.operators) | set(admins)) - {requester})


async def second_approval(
    *,
    asker: Asker,
    store: Store,
    machine: Machine,
    people: list[int],
    requester: str,
    summary: str,
    job_id: int,
    timeout: float,
) -> int:
    """The id of the person who approved; JobCancelled when refused, expired or nobody."""
    if not people:
        raise JobCancelled(
            f"{machine.name} needs a second person to approve erasing it (erase_approval), "
            "and it has no other operator or admin; nothing was changed"
        )
    text = (
        f"🔐 {requester} asks to erase {machine.name} (job {job_id}).\n{summary}\n\n"
        f"Approve only if you know about it. Approve within {format_duration(timeout)}."
    )
    asks = {
        asyncio.ensure_future(
            asker.confirm(
                person,
                person,
                text,
                yes=f"Approve erasing {machine.name}",
                no="Refuse",
                timeout=timeout,
            )
        ): person
        for person in people
    }
    verdict: tuple[int, bool] | None = None
    try:
        pending = set(asks)
        while pending and verdict is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                answer = task.result() if not task.cancelled() else Verdict.EXPIRED
                if answer is not Verdict.EXPIRED and verdict is None:
                    verdict = (asks[task], answer.yes)
    finally:
        for task in asks:
            task.cancel()
    if verdict is None:
        await _audit(store, None, machine, "expired", job_id)
        raise JobCancelled("nobody approved erasing it in time; nothing was changed")
    person, approved = verdict
    await _audit(store, person, machine, "approved" if approved else "refused", job_id)
    if not approved:
        raise JobCancelled(f"{person} refused to approve erasing it; nothing was changed")
    return person


async def _audit(
    store: Store, person: int | None, machine: Machine, decision: str, job_id: int
) -> None:
    await store.audit(
        user_id=person,
        username="",
        action="erase approval",
        machine=machine.name,
        decision=decision,
        detail=f"job {job_id}",
    )
