"""A scripted initrd (``cryptsetup-askpass``, docs/unlocking.md): one prompt for the disk,
asked again after a wrong answer. The bot allows :data:`~bot.flows.unlock.session.MAX_ATTEMPTS`
wrong answers per session, then cools down."""

from __future__ import annotations

from bot.flows.unlock.session import ASK_AGAIN, MAX_ATTEMPTS, UnlockSession
from bot.flows.unlock.texts import UnlockResult
from bot.remote.initrd import Relay


async def prompted_askpass(session: UnlockSession, people: list[int]) -> UnlockResult:
    """Ask until the initrd takes an answer, the attempts run out, or nobody answers."""
    attempt = 1
    resent = False
    note = ""
    while attempt <= MAX_ATTEMPTS:
        done = await session.exchange(people, note)
        if done is None:
            if resent:
                return await session.nobody_answered()
            resent, note = True, ASK_AGAIN
            continue
        outcome = done.outcome
        people = [done.user_id]
        if outcome.result is Relay.REFUSED:
            note = await session.refused_passphrase(done.user_id, outcome)
            continue
        await session.audit(
            done.user_id, done.by, outcome.result.value, f"attempt {attempt}, {outcome.flavour}"
        )
        if outcome.result is Relay.WRONG:
            attempt += 1
            note = f"❌ wrong passphrase, attempt {attempt} of {MAX_ATTEMPTS}."
            continue
        if outcome.result is not Relay.ACCEPTED:
            return await session.undelivered(outcome)
        return await session.handed_over(done.user_id, done.by, done.started)
    return await session.cool_down()
