"""Unlocking a LUKS machine that waits in its initrd, from a phone.

The passphrase is only ever sent to an initrd that proves it holds the pinned initrd host
key: the bot logs in to it (pinned) before anyone is asked, so nobody types a passphrase the
bot cannot deliver, and the answer goes out over a connection that is already open.
Everyone allowed to unlock the machine is asked in their private chat; the first answer
wins, the others' prompts say who answered. The answer is deleted from the chat on arrival,
lives in a ``Secret`` for as long as the relay takes, and is wiped after it. The initrd's
verdict is judged as docs/unlocking.md describes, and the unlock only counts once the system's
own SSH answers with its pinned key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncssh

from bot.chat.access import Access
from bot.chat.asker import Answer, Asker, Tidy
from bot.chat.port import ChatPort
from bot.config.inventory import Machine, UnlockMode
from bot.core.durations import format_duration
from bot.core.keys import fingerprint
from bot.core.poll import PollTimeout, poll_until
from bot.core.secret import Secret
from bot.core.sops import SopsError, SopsReader
from bot.remote.fleet import Fleet
from bot.remote.initrd import Relay, RelayOutcome, relay_passphrase
from bot.remote.place import Location, Pins, Place
from bot.remote.ssh import HostKeyMismatch, SshError, probe_tcp
from bot.remote.target import Target
from store import Store

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
COOLDOWN = 300.0


@dataclass(frozen=True)
class UnlockResult:
    """How a session ended; ``told`` are the chats that already got the outcome."""

    ok: bool
    summary: str
    told: frozenset[int] = frozenset()


class _Link:
    """The pinned SSH connection to the initrd, reopened once when it went stale."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn: asyncssh.SSHClientConnection | None = None

    async def open(self) -> asyncssh.SSHClientConnection:
        if self.conn is None or self.conn.is_closed():
            self.close()
            self.conn = await self.target.initrd()
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Unlocker:
    """One unlock session per machine at a time; callers share the running one."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        store: Store,
        chat: ChatPort,
        asker: Asker,
        access: Access,
        sops: SopsReader,
        prompt_timeout: float,
        settle: float,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.chat = chat
        self.asker = asker
        self.access = access
        self.sops = sops
        self.prompt_timeout = prompt_timeout
        self.settle = settle
        self._sessions: dict[str, asyncio.Task[UnlockResult]] = {}
        self._cooldown_until: dict[str, float] = {}
        # ``unlock = auto``: which way the machine's initrd took a passphrase last time.
        self._flavour: dict[str, UnlockMode] = {}

    def active(self, machine: str) -> bool:
        return machine in self._sessions

    async def unlock(
        self,
        machine: Machine,
        *,
        trigger: str,
        ask: list[int] | None = None,
        seen: Location | None = None,
    ) -> UnlockResult:
        """Unlock ``machine`` (or join the session already running) and report the outcome.

        ``ask`` narrows who is prompted (default: its operators and the admins); ``seen`` is
        a look the caller just took, so it is not taken twice.
        """
        task = self._sessions.get(machine.name)
        if task is None:
            task = asyncio.create_task(
                self._session(machine, trigger, ask, seen), name=f"unlock-{machine.name}"
            )
            self._sessions[machine.name] = task
            task.add_done_callback(lambda _: self._sessions.pop(machine.name, None))
        return await asyncio.shield(task)

    async def follow_boot(
        self, machine: Machine, *, trigger: str, timeout: float | None = None
    ) -> UnlockResult:
        """Follow an expected reboot of a machine seen going down: look about once a second
        (``reboot_poll``) until its initrd answers (then unlock it) or its system is up."""
        target = await self.fleet.target(machine)
        limit = machine.boot_timeout if timeout is None else timeout
        try:
            seen = await poll_until(
                lambda: target.locate(timeout=target.reach.ssh_timeout),
                lambda s: s.place in (Place.SYSTEM, Place.INITRD) or _initrd_mismatch(s),
                timeout=limit,
                interval=target.reach.poll,
            )
        except PollTimeout:
            text = f"{machine.name} did not come back within {format_duration(limit)}"
            return UnlockResult(False, text)
        if seen.place is Place.SYSTEM:
            await self.store.update_machine(machine.name, state=Place.SYSTEM)
            return UnlockResult(True, f"{machine.name} is up")
        return await self.unlock(machine, trigger=trigger, seen=seen)

    async def shutdown(self) -> None:
        for task in list(self._sessions.values()):
            task.cancel()
        for task in list(self._sessions.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the session ------------------------------------------------------------------------

    async def _session(
        self, m: Machine, trigger: str, ask: list[int] | None, seen: Location | None
    ) -> UnlockResult:
        until = self._cooldown_until.get(m.name, 0.0)
        if time.monotonic() < until:
            left = format_duration(until - time.monotonic())
            return UnlockResult(
                False, f"{m.name} is cooling down after wrong passphrases ({left} left)"
            )
        target = await self.fleet.target(m)
        pins = target.pins
        if not pins.initrd:
            told = await self._refuse(m, trigger, "no pinned initrd host key", pins)
            text = f"{m.name}: no pinned initrd host key; passphrase not sent"
            return UnlockResult(False, text, told)
        if seen is None:
            seen = await target.locate(timeout=target.reach.ssh_timeout)
        if seen.place is Place.SYSTEM:
            await self.store.update_machine(m.name, state=Place.SYSTEM)
            return UnlockResult(True, f"{m.name} is already up")
        if _initrd_mismatch(seen):
            told = await self._refuse(m, trigger, "initrd host key mismatch", pins, seen.presented)
            return UnlockResult(False, _mismatch_summary(m, pins.initrd, seen.presented), told)
        if seen.place is not Place.INITRD:
            await self._audit(m, None, "", "not waiting", f"{trigger}: {seen.detail}")
            return UnlockResult(False, f"{m.name} is not waiting in its initrd ({seen.detail})")
        await self.store.update_machine(m.name, state=Place.INITRD)
        link = _Link(target)
        try:
            refused = await self._login(m, trigger, pins, link)
            if refused is not None:
                return refused
            verified = fingerprint(pins.initrd)
            if m.auto_unlock and m.luks_passphrase_secret and m.secrets_file is not None:
                return await self._auto(m, link, target, verified, trigger)
            return await self._prompted(m, link, target, verified, ask)
        finally:
            link.close()

    async def _login(
        self, m: Machine, trigger: str, pins: Pins, link: _Link
    ) -> UnlockResult | None:
        """Log in to the initrd before asking anyone; a result when that is impossible."""
        try:
            await link.open()
        except HostKeyMismatch as exc:
            told = await self._refuse(
                m, trigger, "initrd host key mismatch", pins, exc.actual_fingerprint
            )
            return UnlockResult(False, _mismatch_summary(m, pins.initrd, ""), told)
        except SshError as exc:
            text = f"🚨 {m.name} waits in its initrd, but I cannot log in to it: {exc}"
            await self._audit(m, None, "", "failed", f"{trigger}: initrd login: {exc}"[:300])
            return UnlockResult(False, text, await self._alert(m, text))
        return None

    async def _auto(
        self, m: Machine, link: _Link, target: Target, verified: str, trigger: str
    ) -> UnlockResult:
        assert m.secrets_file is not None
        pins = target.pins
        started = time.monotonic()
        try:
            secret = await self.sops.value(m.secrets_file, m.luks_passphrase_secret)
        except SopsError as exc:
            text = f"🚨 {m.name} waits in its initrd, and auto-unlock failed: {exc}"
            await self._audit(m, None, "", "failed", str(exc)[:200], action="auto-unlock")
            return UnlockResult(False, text, await self._alert(m, text))
        try:
            outcome = await self._relay(m, link, pins, secret)
        finally:
            secret.wipe()
        await self._audit(m, None, "", outcome.result.value, outcome.flavour, action="auto-unlock")
        if outcome.result is not Relay.ACCEPTED:
            text = f"🚨 auto-unlock of {m.name} failed: {_explain(outcome)}"
            return UnlockResult(False, text, await self._alert(m, text))
        up = await self._wait_up(target)
        took = format_duration(time.monotonic() - started)
        if not up:
            return UnlockResult(False, _not_up(m), await self._alert(m, _not_up(m)))
        text = (
            f"🔓 {m.name} auto-unlocked ({trigger}; initrd key {verified} verified), "
            f"up after {took}"
        )
        return UnlockResult(True, f"auto-unlocked, up after {took}", await self._alert(m, text))

    async def _prompted(
        self, m: Machine, link: _Link, target: Target, verified: str, ask: list[int] | None
    ) -> UnlockResult:
        pins = target.pins
        people = ask or self.access.people_for(m)
        if not people:
            return UnlockResult(False, f"nobody may unlock {m.name}: add operators or admins")
        attempt = 1
        resent = False
        note = ""
        while attempt <= MAX_ATTEMPTS:
            answer = await self._collect(m, people, verified, note)
            if answer is None:
                if not resent:
                    resent = True
                    note = "(asking again: nobody answered)"
                    continue
                waited = format_duration(2 * m.unlock_timeout)
                text = f"🚨 nobody unlocked {m.name} within {waited}; it still waits in its initrd"
                await self._audit(m, None, "", "expired", f"nobody answered within {waited}")
                return UnlockResult(False, text, await self._alert(m, text))
            user_id, by, secret = answer.user_id, answer.by, answer.secret
            started = time.monotonic()
            try:
                outcome = await self._relay(m, link, pins, secret)
            finally:
                secret.wipe()
                await answer.tidying
            await self._audit(
                m, user_id, by, outcome.result.value, f"attempt {attempt}, {outcome.flavour}"
            )
            if outcome.result is Relay.WRONG:
                attempt += 1
                people = [user_id]
                note = f"❌ wrong passphrase, attempt {attempt} of {MAX_ATTEMPTS}."
                continue
            if outcome.result is not Relay.ACCEPTED:
                return await self._undelivered(m, target, outcome)
            await self.chat.post(
                user_id, f"Passphrase handed to {m.name}'s initrd; waiting for the system…"
            )
            return await self._report_up(m, target, user_id, by, started)
        return await self._cool_down(m)

    async def _report_up(
        self, m: Machine, target: Target, user_id: int, by: str, started: float
    ) -> UnlockResult:
        up = await self._wait_up(target)
        took = format_duration(time.monotonic() - started)
        if not up:
            await self._audit(m, user_id, by, "not up", f"within {format_duration(m.boot_timeout)}")
            return UnlockResult(False, _not_up(m), await self._alert(m, _not_up(m)))
        await self._audit(m, user_id, by, "up", f"after {took}")
        text = f"🔓 {m.name} unlocked by {by}, up after {took}"
        return UnlockResult(True, f"unlocked by {by}, up after {took}", await self._alert(m, text))

    async def _undelivered(self, m: Machine, target: Target, outcome: RelayOutcome) -> UnlockResult:
        """The initrd stopped asking, or went away, before it took the passphrase."""
        if target.pins.system and (await target.locate()).place is Place.SYSTEM:
            await self.store.update_machine(m.name, state=Place.SYSTEM)
            return UnlockResult(True, f"{m.name} is up (unlocked elsewhere)")
        text = (
            f"⚠️ {m.name}: {_explain(outcome)}. The passphrase was NOT sent. "
            f"/unlock {m.name} once its initrd answers again."
        )
        return UnlockResult(False, text, await self._alert(m, text))

    async def _cool_down(self, m: Machine) -> UnlockResult:
        self._cooldown_until[m.name] = time.monotonic() + COOLDOWN
        text = (
            f"🚨 {MAX_ATTEMPTS} wrong passphrases for {m.name}; no more attempts for "
            f"{format_duration(COOLDOWN)}. It still waits in its initrd."
        )
        await self._audit(m, None, "", "cooldown", f"{MAX_ATTEMPTS} wrong attempts")
        return UnlockResult(False, text, await self._alert(m, text))

    async def _collect(
        self, m: Machine, people: list[int], verified: str, note: str
    ) -> Answer | None:
        """Ask everyone at once; the first answer wins and the other prompts say who answered."""
        prompt = (
            f"🔐 {m.name} is waiting for its disk passphrase; initrd key {verified} verified.\n"
            "Reply with the passphrase: I delete your message at once and never store it."
        )
        if note:
            prompt = f"{note}\n{prompt}"
        return await self.asker.ask_first(
            people,
            prompt,
            purpose=f"unlock {m.name}",
            timeout=m.unlock_timeout,
            tidy=Tidy(
                answered=f"🔐 {m.name}: passphrase received and deleted.",
                others=f"🔐 {m.name}: {{by}} is unlocking it.",
                expired=f"⌛ The prompt to unlock {m.name} expired.",
            ),
            late=lambda by: (
                f"{by} already answered for {m.name}; I deleted your message."
                if by is not None
                else f"That prompt for {m.name} expired; I deleted your message."
            ),
        )

    async def _relay(self, m: Machine, link: _Link, pins: Pins, secret: Secret) -> RelayOutcome:
        """Hand ``secret`` over on the open link; a stale link is reopened once, since
        nothing was sent on it yet."""
        mode = self._flavour.get(m.name, m.unlock)
        outcome = RelayOutcome(Relay.DROPPED, "askpass", "no connection")
        for _ in range(2):
            try:
                conn = await link.open()
            except HostKeyMismatch as exc:
                why = "initrd host key mismatch"
                await self._refuse(m, "relay", why, pins, exc.actual_fingerprint)
                return RelayOutcome(Relay.DROPPED, "askpass", "initrd host key mismatch")
            except SshError as exc:
                return RelayOutcome(Relay.DROPPED, "askpass", str(exc))
            outcome = await relay_passphrase(
                conn,
                secret,
                mode=mode,
                prompt_timeout=self.prompt_timeout,
                settle=self.settle,
            )
            if outcome.result is not Relay.DROPPED:
                break
            link.close()
        if outcome.result in (Relay.ACCEPTED, Relay.WRONG) and m.unlock == "auto":
            self._flavour[m.name] = outcome.flavour
        return outcome

    async def _wait_up(self, target: Target) -> bool:
        """Wait for the system's SSH: its pinned key, or (none pinned) an open port."""
        m = target.machine
        try:
            if not target.pins.system:
                await poll_until(
                    lambda: probe_tcp(m.host, m.ssh_port, timeout=2.0),
                    bool,
                    timeout=m.boot_timeout,
                    interval=target.reach.poll,
                )
                await self.store.update_machine(
                    m.name, state=Place.SYSTEM, detail="host key not pinned"
                )
                return True
            await target.wait_for({Place.SYSTEM}, timeout=m.boot_timeout)
        except PollTimeout:
            return False
        await self.store.update_machine(m.name, state=Place.SYSTEM)
        return True

    async def _refuse(
        self, m: Machine, trigger: str, why: str, pins: Pins, presented: str = ""
    ) -> frozenset[int]:
        """The loud alert when the passphrase must not go out, with both fingerprints."""
        lines = [f"🚨 {m.name}: {why}. The passphrase was NOT sent."]
        if pins.initrd:
            lines.append(f"pinned:    {fingerprint(pins.initrd)} ({pins.initrd_source})")
        if presented:
            shown = presented if presented.startswith("SHA256:") else fingerprint(presented)
            lines.append(f"presented: {shown}")
        lines += [f"contradiction, {c}" for c in pins.conflicts]
        if not pins.initrd:
            lines.append(
                "Set initrd_host_key in the inventory; or, once the system is up, the bot "
                f"reads it from {m.initrd_host_key_file or 'initrd_host_key_file'} itself."
            )
        else:
            lines.append(
                "If the machine was reinstalled outside the bot, update its key; otherwise "
                "someone may be impersonating it."
            )
        await self._audit(m, None, "", "refused", f"{why} ({trigger})"[:300])
        return await self._alert(m, "\n".join(lines))

    async def _alert(self, m: Machine, text: str) -> frozenset[int]:
        people = self.access.people_for(m)
        await asyncio.gather(*(self.chat.post(p, text) for p in people))
        return frozenset(people)

    async def _audit(
        self,
        m: Machine,
        user_id: int | None,
        username: str,
        decision: str,
        detail: str,
        *,
        action: str = "unlock",
    ) -> None:
        """Every attempt and verdict: who, which machine, what came of it — never the secret."""
        await self.store.audit(
            user_id=user_id,
            username=username.lstrip("@"),
            action=action,
            machine=m.name,
            decision=decision,
            detail=detail,
        )


def _initrd_mismatch(seen: Location) -> bool:
    """Something answers on the initrd port with a key other than the pinned one."""
    return seen.place is Place.WRONG_KEY and seen.on_initrd_port


def _mismatch_summary(m: Machine, pinned: str, presented: str) -> str:
    shown = f", presented {fingerprint(presented)}" if presented else ""
    return (
        f"{m.name}: initrd host key mismatch (pinned {fingerprint(pinned)}{shown}); "
        "passphrase not sent"
    )


def _explain(outcome: RelayOutcome) -> str:
    return {
        Relay.NOT_WAITING: "its initrd is not asking for a passphrase",
        Relay.DROPPED: "the initrd went away before it took the passphrase",
        Relay.WRONG: "the passphrase was wrong",
        Relay.ACCEPTED: "accepted",
    }[outcome.result] + (f" ({outcome.detail})" if outcome.detail else "")


def _not_up(m: Machine) -> str:
    return (
        f"🚨 {m.name} took the passphrase but its system did not come up within "
        f"{format_duration(m.boot_timeout)}"
    )
