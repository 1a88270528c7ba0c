"""A systemd initrd, as its real password agent behaves (docs/initrd.md): one query per LUKS
volume, each naming its disk; three tries per boot each; after the third wrong one
systemd-cryptsetup gives up without a word to the SSH session, and only a reboot brings new
tries. So the bot asks for the disk that is asking, answers that query only, judges it, and
counts tries per boot id."""

from __future__ import annotations

import asyncio
import time

from bot.flows.unlock.session import ASK_AGAIN, UnlockSession
from bot.flows.unlock.texts import UnlockResult
from bot.remote.initrd import MAX_QUERIES, SYSTEMD_TRIES, Query, Relay, RelayOutcome, list_queries
from bot.remote.ssh import SshError

#: Prompts in one systemd session: every try of every disk, and a few refusals.
MAX_SYSTEMD_ROUNDS = SYSTEMD_TRIES * MAX_QUERIES + 3


async def prompted_systemd(session: UnlockSession, people: list[int]) -> UnlockResult:
    """Ask for each pending disk in turn until none is left, the initrd gives up, or
    nobody answers."""
    m, memory = session.m, session.memory
    resent = False
    note = ""
    last_user: int | None = None
    for _ in range(MAX_SYSTEMD_ROUNDS):
        found = await _queries(session)
        if found is None:
            outcome = RelayOutcome(Relay.DROPPED, "systemd", "no answer on its login")
            return await session.undelivered(outcome)
        boot, queries = found
        if not queries:
            return await _not_asking(session, boot, last_user)
        # The agent asks in the order --list shows: ask for that disk (docs/initrd.md).
        query = queries[0]
        asking = session.scrub(query.message)  # what the store keeps a digest of
        used = await memory.tries.used(m.name, boot, asking)
        detail = f"Disk {query.disk}: try {used + 1} of {SYSTEMD_TRIES} this boot."
        if len(queries) > 1:
            detail += f" ({len(queries)} disks are asking; one at a time.)"
        done = await session.exchange(
            people, note, what=f"disk {query.what}", detail=detail, query=query
        )
        if done is None:
            if resent:
                return await session.nobody_answered()
            resent, note = True, ASK_AGAIN
            continue
        user_id, by, outcome = done.user_id, done.by, done.outcome
        last_user = user_id
        people = [user_id]
        if outcome.result is Relay.REFUSED:
            note = await session.refused_passphrase(user_id, outcome)
            continue
        if outcome.result in (Relay.WRONG, Relay.ACCEPTED):
            await memory.tries.spend(m.name, boot, asking)
        last_try = used + 1 >= SYSTEMD_TRIES
        verdict = outcome.result
        if verdict is Relay.ACCEPTED and outcome.stayed and last_try and not outcome.pending:
            # The last try, and the initrd stays without asking again: systemd-cryptsetup
            # has given up (its verdict goes to the console only).
            verdict = Relay.GAVE_UP
        await session.audit(
            user_id,
            by,
            verdict.value,
            f"disk {query.disk[:60]}, try {used + 1} of {SYSTEMD_TRIES} this boot",
        )
        if verdict is Relay.GAVE_UP:
            return await _gave_up(session, last_user)
        if verdict is Relay.WRONG:
            note = f"❌ wrong {query.what}, attempt {used + 2} of {SYSTEMD_TRIES}."
            if len(outcome.pending) > 1:
                note += f" (That was disk {query.disk}.)"
            continue
        if verdict is Relay.NOT_WAITING and outcome.pending:
            # Another disk came first meanwhile: nothing was sent; ask for that one.
            note = f"⚠️ {outcome.detail}."
            continue
        if verdict is not Relay.ACCEPTED:
            return await session.undelivered(outcome)
        others = [q for q in outcome.pending if q.message != query.message]
        if others:
            note = f"✅ disk {query.disk} took it; {len(others)} more disk(s) to go."
            continue
        return await session.handed_over(user_id, by, done.started)
    text = f"🚨 {m.name}: too many prompts in one unlock session; /unlock {m.name} again"
    return UnlockResult(False, text, await session.alert(text))


async def _queries(session: UnlockSession) -> tuple[str, list[Query]] | None:
    """The boot id and the pending queries, waiting up to ``settle`` for the first one
    (systemd-cryptsetup may start asking after the initrd's sshd is up)."""
    timeout = session.tools.tuning.ssh_timeout
    deadline = time.monotonic() + session.tools.tuning.unlock_settle
    while True:
        try:
            conn = await session.login.open()
        except SshError:
            return None
        boot = await session.target.boot_id(on=session.login)
        queries = await list_queries(conn, timeout)
        if queries is None and conn.is_closed():
            return None
        if queries or time.monotonic() >= deadline:
            return (boot, queries) if queries is not None else None
        await asyncio.sleep(0.5)


async def _not_asking(session: UnlockSession, boot: str, user_id: int | None) -> UnlockResult:
    """A systemd initrd with no pending query: out of tries, or unlocked meanwhile."""
    m = session.m
    up = await session.up_meanwhile()
    if up is not None:
        return up
    if boot and await session.memory.tries.used_this_boot(m.name, boot) >= SYSTEMD_TRIES:
        return await _gave_up(session, user_id)
    text = (
        f"⚠️ {m.name} waits in its initrd but nothing there asks for a passphrase. "
        f"systemd-cryptsetup stops asking after {SYSTEMD_TRIES} wrong tries per boot; "
        "if that happened, only a reboot brings new tries. The passphrase was NOT sent."
    )
    await session.audit(None, "", "not waiting", "no pending password query")
    told = await session.alert(text)
    session.offer_a_reboot(user_id, told)
    return UnlockResult(False, text, told)


async def _gave_up(session: UnlockSession, user_id: int | None) -> UnlockResult:
    text = (
        f"🚨 {session.m.name}: its initrd has given up after {SYSTEMD_TRIES} wrong tries this "
        "boot (systemd-cryptsetup asks 3 times per boot). Only a reboot brings new tries."
    )
    await session.audit(user_id, "", "gave up", f"{SYSTEMD_TRIES} tries this boot")
    told = await session.alert(text)
    session.offer_a_reboot(user_id, told)
    return UnlockResult(False, text, told)
