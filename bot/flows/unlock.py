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
import os
import time
from dataclasses import dataclass

import asyncssh

from bot.chat.port import MessageRef
from bot.chat.questions import Question
from bot.config.inventory import Machine, UnlockMode
from bot.core.durations import format_duration
from bot.core.keys import fingerprint
from bot.core.secret import Secret
from bot.core.sops import SopsError, decrypt_value
from bot.flows.services import Services
from bot.remote.detect import Detection, Found, Pins, detect
from bot.remote.initrd import Relay, RelayOutcome, relay_passphrase
from bot.remote.reboot_watch import BootTimeout, Seen, presented_key, same_key, wait_for_boot
from bot.remote.ssh import HostKeyMismatch, SshEndpoint, SshError, connect, probe_tcp

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

    def __init__(self, endpoint: SshEndpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.conn: asyncssh.SSHClientConnection | None = None

    async def open(self) -> asyncssh.SSHClientConnection:
        if self.conn is None or self.conn.is_closed():
            self.close()
            self.conn = await connect(self.endpoint, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Unlocker:
    """One unlock session per machine at a time; callers share the running one."""

    def __init__(self, services: Services) -> None:
        self.s = services
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
        seen: Detection | None = None,
    ) -> UnlockResult:
        """Unlock ``machine`` (or join the session already running) and report the outcome.

        ``ask`` narrows who is prompted (default: its operators and the admins); ``seen`` is
        a detection the caller just made, so it is not made twice.
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
        pins = await self._pins(machine)
        limit = machine.boot_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            seen = await detect(machine, pins, timeout=self.s.tuning.ssh_timeout)
            if seen.found is Found.UP:
                await self.s.store.update_machine(machine.name, state="up")
                return UnlockResult(True, f"{machine.name} is up")
            if seen.found in (Found.INITRD, Found.MISMATCH):
                return await self.unlock(machine, trigger=trigger, seen=seen)
            if time.monotonic() >= deadline:
                text = f"{machine.name} did not come back within {format_duration(limit)}"
                return UnlockResult(False, text)
            await asyncio.sleep(self.s.tuning.reboot_poll)

    async def shutdown(self) -> None:
        for task in list(self._sessions.values()):
            task.cancel()
        for task in list(self._sessions.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the session ------------------------------------------------------------------------

    async def _pins(self, m: Machine) -> Pins:
        known = await self.s.store.machine(m.name)
        if known.initrd_host_key:
            return Pins(known.initrd_host_key, known.host_key, "recorded at deploy")
        return Pins(m.initrd_host_key, known.host_key, "initrd_host_key in the inventory")

    async def _session(
        self, m: Machine, trigger: str, ask: list[int] | None, seen: Detection | None
    ) -> UnlockResult:
        until = self._cooldown_until.get(m.name, 0.0)
        if time.monotonic() < until:
            left = format_duration(until - time.monotonic())
            return UnlockResult(
                False, f"{m.name} is cooling down after wrong passphrases ({left} left)"
            )
        pins = await self._pins(m)
        if not pins.initrd:
            told = await self._refuse(m, trigger, "no pinned initrd host key", pins)
            text = f"{m.name}: no pinned initrd host key; passphrase not sent"
            return UnlockResult(False, text, told)
        if seen is None:
            seen = await detect(m, pins, timeout=self.s.tuning.ssh_timeout)
        if seen.found is Found.UP:
            await self.s.store.update_machine(m.name, state="up")
            return UnlockResult(True, f"{m.name} is already up")
        if seen.found is Found.MISMATCH:
            told = await self._refuse(m, trigger, "initrd host key mismatch", pins, seen.presented)
            return UnlockResult(False, _mismatch_summary(m, pins.initrd, seen.presented), told)
        if seen.found is not Found.INITRD:
            await self._audit(m, None, "", "not waiting", f"{trigger}: {seen.detail}")
            return UnlockResult(False, f"{m.name} is not waiting in its initrd ({seen.detail})")
        await self.s.store.update_machine(m.name, state="initrd")
        link = _Link(self._endpoint(m, pins), self.s.tuning.ssh_timeout)
        try:
            refused = await self._login(m, trigger, pins, link)
            if refused is not None:
                return refused
            verified = fingerprint(pins.initrd)
            if m.auto_unlock and m.luks_passphrase_secret and m.secrets_file is not None:
                return await self._auto(m, link, pins, verified, trigger)
            return await self._prompted(m, link, pins, verified, ask)
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
        self, m: Machine, link: _Link, pins: Pins, verified: str, trigger: str
    ) -> UnlockResult:
        assert m.secrets_file is not None
        env = {**os.environ, **self.s.settings.sops_env}
        started = time.monotonic()
        try:
            secret = await decrypt_value(
                self.s.settings.sops, m.secrets_file, m.luks_passphrase_secret, env=env
            )
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
        up = await self._wait_up(m, pins.system)
        took = format_duration(time.monotonic() - started)
        if not up:
            return UnlockResult(False, _not_up(m), await self._alert(m, _not_up(m)))
        text = (
            f"🔓 {m.name} auto-unlocked ({trigger}; initrd key {verified} verified), "
            f"up after {took}"
        )
        return UnlockResult(True, f"auto-unlocked, up after {took}", await self._alert(m, text))

    async def _prompted(
        self, m: Machine, link: _Link, pins: Pins, verified: str, ask: list[int] | None
    ) -> UnlockResult:
        people = ask or self.s.access.people_for(m)
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
            user_id, by, secret, tidy = answer
            started = time.monotonic()
            try:
                outcome = await self._relay(m, link, pins, secret)
            finally:
                secret.wipe()
                await tidy
            await self._audit(
                m, user_id, by, outcome.result.value, f"attempt {attempt}, {outcome.flavour}"
            )
            if outcome.result is Relay.WRONG:
                attempt += 1
                people = [user_id]
                note = f"❌ wrong passphrase, attempt {attempt} of {MAX_ATTEMPTS}."
                continue
            if outcome.result is not Relay.ACCEPTED:
                return await self._undelivered(m, pins, outcome)
            await self.s.chat.post(
                user_id, f"Passphrase handed to {m.name}'s initrd; waiting for the system…"
            )
            return await self._report_up(m, pins, user_id, by, started)
        return await self._cool_down(m)

    async def _report_up(
        self, m: Machine, pins: Pins, user_id: int, by: str, started: float
    ) -> UnlockResult:
        up = await self._wait_up(m, pins.system)
        took = format_duration(time.monotonic() - started)
        if not up:
            await self._audit(m, user_id, by, "not up", f"within {format_duration(m.boot_timeout)}")
            return UnlockResult(False, _not_up(m), await self._alert(m, _not_up(m)))
        await self._audit(m, user_id, by, "up", f"after {took}")
        text = f"🔓 {m.name} unlocked by {by}, up after {took}"
        return UnlockResult(True, f"unlocked by {by}, up after {took}", await self._alert(m, text))

    async def _undelivered(self, m: Machine, pins: Pins, outcome: RelayOutcome) -> UnlockResult:
        """The initrd stopped asking, or went away, before it took the passphrase."""
        if await self._system_up(m, pins.system):
            await self.s.store.update_machine(m.name, state="up")
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
    ) -> tuple[int, str, Secret, asyncio.Task[None]] | None:
        """Ask everyone at once; the first answer wins and the other prompts say who answered.

        Besides the answer, returns the edits of the prompts still to be made, so they go out
        while the passphrase is being relayed rather than before.
        """
        prompt = (
            f"🔐 {m.name} is waiting for its disk passphrase; initrd key {verified} verified.\n"
            "Reply with the passphrase: I delete your message at once and never store it."
        )
        if note:
            prompt = f"{note}\n{prompt}"
        asked = await self._ask_all(m, people, prompt)
        winner: Question | None = None
        try:
            done, _ = await asyncio.wait(
                [q.future for q, _ in asked],
                timeout=m.unlock_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            winner = next(
                (q for q, _ in asked if q.future in done and not q.future.cancelled()), None
            )
        finally:
            late = (
                f"{winner.answered_by} already answered for {m.name}; I deleted your message."
                if winner is not None
                else f"That prompt for {m.name} expired; I deleted your message."
            )
            for question, _ in asked:
                if question is not winner:
                    self.s.answers.close(question, late_note=late)
        tidy = asyncio.create_task(self._tidy(m, asked, winner), name=f"unlock-tidy-{m.name}")
        if winner is None:
            await tidy
            return None
        secret = Secret(winner.future.result().encode())
        return winner.user_id, winner.answered_by or str(winner.user_id), secret, tidy

    async def _ask_all(
        self, m: Machine, people: list[int], prompt: str
    ) -> list[tuple[Question, MessageRef | None]]:
        questions = [
            self.s.answers.ask(p, p, secret=True, purpose=f"unlock {m.name}") for p in people
        ]
        refs = await asyncio.gather(
            *(self.s.chat.post(p, prompt, force_reply=True) for p in people)
        )
        for question, ref in zip(questions, refs, strict=True):
            if ref is not None:
                question.prompt_message_id = ref.message_id
        return list(zip(questions, refs, strict=True))

    async def _tidy(
        self, m: Machine, asked: list[tuple[Question, MessageRef | None]], winner: Question | None
    ) -> None:
        edits = []
        for question, ref in asked:
            if ref is None:
                continue
            if winner is None:
                text = f"⌛ The prompt to unlock {m.name} expired."
            elif question is winner:
                text = f"🔐 {m.name}: passphrase received and deleted."
            else:
                text = f"🔐 {m.name}: {winner.answered_by} is unlocking it."
            edits.append(self.s.chat.edit(ref, text))
        await asyncio.gather(*edits)

    def _endpoint(self, m: Machine, pins: Pins) -> SshEndpoint:
        return SshEndpoint(
            host=m.host,
            port=m.initrd_port,
            user="root",
            client_key=self.s.settings.ssh_key,
            host_key=pins.initrd,
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
                prompt_timeout=self.s.tuning.ssh_timeout,
                settle=self.s.tuning.unlock_settle,
            )
            if outcome.result is not Relay.DROPPED:
                break
            link.close()
        if outcome.result in (Relay.ACCEPTED, Relay.WRONG) and m.unlock == "auto":
            self._flavour[m.name] = outcome.flavour
        return outcome

    async def _wait_up(self, m: Machine, host_key: str) -> bool:
        if not host_key:
            deadline = time.monotonic() + m.boot_timeout
            while time.monotonic() < deadline:
                if await probe_tcp(m.host, m.ssh_port, timeout=2.0):
                    await self.s.store.update_machine(
                        m.name, state="up", detail="host key not pinned"
                    )
                    return True
                await asyncio.sleep(self.s.tuning.reboot_poll)
            return False
        try:
            await wait_for_boot(
                m,
                host_key=host_key,
                initrd_key="",
                timeout=m.boot_timeout,
                poll=self.s.tuning.reboot_poll,
                want=frozenset({Seen.SYSTEM}),
            )
        except BootTimeout:
            return False
        await self.s.store.update_machine(m.name, state="up")
        return True

    async def _system_up(self, m: Machine, host_key: str) -> bool:
        if not host_key:
            return False
        presented, _ = await presented_key(m.host, m.ssh_port, timeout=self.s.tuning.ssh_timeout)
        return presented is not None and same_key(presented, host_key)

    async def _refuse(
        self, m: Machine, trigger: str, why: str, pins: Pins, presented: str = ""
    ) -> frozenset[int]:
        """The loud alert when the passphrase must not go out, with both fingerprints."""
        lines = [f"🚨 {m.name}: {why}. The passphrase was NOT sent."]
        if pins.initrd:
            lines.append(f"pinned:    {fingerprint(pins.initrd)} ({pins.source})")
        if presented:
            shown = presented if presented.startswith("SHA256:") else fingerprint(presented)
            lines.append(f"presented: {shown}")
        if not pins.initrd:
            lines.append("Set initrd_host_key in the inventory, or reinstall with the bot.")
        else:
            lines.append(
                "If the machine was reinstalled outside the bot, update its key; otherwise "
                "someone may be impersonating it."
            )
        await self._audit(m, None, "", "refused", f"{why} ({trigger})"[:300])
        return await self._alert(m, "\n".join(lines))

    async def _alert(self, m: Machine, text: str) -> frozenset[int]:
        people = self.s.access.people_for(m)
        await asyncio.gather(*(self.s.chat.post(p, text) for p in people))
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
        await self.s.store.audit(
            user_id=user_id,
            username=username.lstrip("@"),
            action=action,
            machine=m.name,
            decision=decision,
            detail=detail,
        )


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
