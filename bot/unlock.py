"""Unlocking a LUKS machine that waits in its initrd, from a phone.

The passphrase is only ever sent to an initrd that proves it holds the pinned initrd host
key. Everyone allowed to unlock the machine is asked in their private chat; the first
answer wins, the others' prompts say who answered. The answer is deleted from the chat on
arrival, lives in a ``Secret`` for as long as the relay takes, and is wiped after it. The
initrd's verdict is judged as reference.md describes, and the unlock only counts once the
system's own SSH answers with its pinned key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass

from bot.answers import Question
from bot.chat import MessageRef
from bot.durations import format_duration
from bot.initrd import Relay, RelayOutcome, relay_passphrase
from bot.inventory import Machine
from bot.keys import fingerprint
from bot.reboot_watch import BootTimeout, Seen, same_key, wait_for_boot
from bot.secret import Secret
from bot.services import Services
from bot.sops import SopsError, decrypt_value
from bot.ssh import HostKeyMismatch, SshEndpoint, SshError, connect, fetch_host_key, probe_tcp

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
COOLDOWN = 300.0


@dataclass(frozen=True)
class UnlockResult:
    ok: bool
    summary: str


class Unlocker:
    """One unlock session per machine at a time; callers share the running one."""

    def __init__(self, services: Services) -> None:
        self.s = services
        self._sessions: dict[str, asyncio.Task[UnlockResult]] = {}
        self._cooldown_until: dict[str, float] = {}

    def active(self, machine: str) -> bool:
        return machine in self._sessions

    async def unlock(
        self, machine: Machine, *, trigger: str, ask: list[int] | None = None
    ) -> UnlockResult:
        """Unlock ``machine`` (or join the session already running) and report the outcome."""
        task = self._sessions.get(machine.name)
        if task is None:
            task = asyncio.create_task(
                self._session(machine, trigger, ask), name=f"unlock-{machine.name}"
            )
            self._sessions[machine.name] = task
            task.add_done_callback(lambda _: self._sessions.pop(machine.name, None))
        return await asyncio.shield(task)

    async def shutdown(self) -> None:
        for task in list(self._sessions.values()):
            task.cancel()
        for task in list(self._sessions.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the session ------------------------------------------------------------------------

    async def _session(self, m: Machine, trigger: str, ask: list[int] | None) -> UnlockResult:
        until = self._cooldown_until.get(m.name, 0.0)
        if time.monotonic() < until:
            left = format_duration(until - time.monotonic())
            return UnlockResult(
                False, f"{m.name} is cooling down after wrong passphrases ({left} left)"
            )
        known = await self.s.store.machine(m.name)
        pinned = known.initrd_host_key or m.initrd_host_key
        if not pinned:
            await self._refuse(m, trigger, "no pinned initrd host key", "")
            return UnlockResult(False, f"{m.name}: no pinned initrd host key; passphrase not sent")
        timeout = self.s.tuning.ssh_timeout
        try:
            presented = await fetch_host_key(m.host, m.initrd_port, timeout=timeout)
        except SshError as exc:
            if await self._system_up(m, known.host_key):
                return UnlockResult(True, f"{m.name} is already up")
            return UnlockResult(False, f"{m.name} is not waiting in its initrd ({exc})")
        if not same_key(presented, pinned):
            await self._refuse(m, trigger, "initrd host key mismatch", presented, pinned)
            return UnlockResult(
                False,
                f"{m.name}: initrd host key mismatch (pinned {fingerprint(pinned)}, presented "
                f"{fingerprint(presented)}); passphrase not sent",
            )
        verified = fingerprint(pinned)
        await self.s.store.update_machine(m.name, state="initrd")
        if m.auto_unlock and m.luks_passphrase_secret and m.secrets_file is not None:
            return await self._auto(m, pinned, known.host_key, verified, trigger)
        return await self._prompted(m, pinned, known.host_key, verified, trigger, ask)

    async def _auto(
        self, m: Machine, pinned: str, host_key: str, verified: str, trigger: str
    ) -> UnlockResult:
        assert m.secrets_file is not None
        env = {**os.environ, **self.s.settings.sops_env}
        started = time.monotonic()
        try:
            secret = await decrypt_value(
                self.s.settings.sops, m.secrets_file, m.luks_passphrase_secret, env=env
            )
        except SopsError as exc:
            await self._alert(m, f"🚨 {m.name} waits in its initrd, and auto-unlock failed: {exc}")
            await self._audit(m, None, "sops", "failed", str(exc)[:200])
            return UnlockResult(False, f"auto-unlock of {m.name} failed: {exc}")
        try:
            outcome = await self._relay(m, pinned, secret)
        finally:
            secret.wipe()
        await self._audit(m, None, "auto-unlock", outcome.result.value, outcome.flavour)
        if outcome.result is not Relay.ACCEPTED:
            text = f"🚨 auto-unlock of {m.name} failed: {_explain(outcome)}"
            await self._alert(m, text)
            return UnlockResult(False, text)
        up = await self._wait_up(m, host_key)
        took = format_duration(time.monotonic() - started)
        if not up:
            text = _not_up(m)
            await self._alert(m, text)
            return UnlockResult(False, text)
        text = (
            f"🔓 {m.name} auto-unlocked ({trigger}; initrd key {verified} verified), "
            f"up after {took}"
        )
        await self._alert(m, text)
        return UnlockResult(True, f"auto-unlocked, up after {took}")

    async def _prompted(
        self,
        m: Machine,
        pinned: str,
        host_key: str,
        verified: str,
        trigger: str,
        ask: list[int] | None,
    ) -> UnlockResult:
        people = ask or self.s.access.people_for(m)
        if not people:
            return UnlockResult(False, f"nobody may unlock {m.name}: add operators or admins")
        attempt = 1
        resent = False
        note = ""
        while attempt <= MAX_ATTEMPTS:
            answer = await self._collect(m, people, verified, attempt, note)
            if answer is None:
                if not resent:
                    resent = True
                    note = "(asking again: nobody answered)"
                    continue
                waited = format_duration(2 * m.unlock_timeout)
                text = f"🚨 nobody unlocked {m.name} within {waited}; it still waits in its initrd"
                await self._alert(m, text)
                return UnlockResult(False, text)
            user_id, by, secret = answer
            started = time.monotonic()
            try:
                outcome = await self._relay(m, pinned, secret)
            finally:
                secret.wipe()
            await self._audit(
                m, user_id, "unlock", outcome.result.value, f"attempt {attempt}, {outcome.flavour}"
            )
            if outcome.result is Relay.WRONG:
                attempt += 1
                if attempt > MAX_ATTEMPTS:
                    break
                people = [user_id]
                note = f"❌ wrong passphrase, attempt {attempt} of {MAX_ATTEMPTS}."
                continue
            if outcome.result is not Relay.ACCEPTED:
                if await self._system_up(m, host_key):
                    return UnlockResult(True, f"{m.name} is up (unlocked elsewhere)")
                text = f"⚠️ {m.name}: {_explain(outcome)}; the passphrase may not have reached it"
                await self._tell(people, text)
                return UnlockResult(False, text)
            await self.s.chat.post(
                user_id, f"Passphrase handed to {m.name}'s initrd; waiting for the system…"
            )
            up = await self._wait_up(m, host_key)
            took = format_duration(time.monotonic() - started)
            if not up:
                text = _not_up(m)
                await self._alert(m, text)
                return UnlockResult(False, text)
            await self._tell(
                self.s.access.people_for(m), f"🔓 {m.name} unlocked by {by}, up after {took}"
            )
            return UnlockResult(True, f"unlocked by {by}, up after {took}")
        self._cooldown_until[m.name] = time.monotonic() + COOLDOWN
        text = (
            f"🚨 {MAX_ATTEMPTS} wrong passphrases for {m.name}; no more attempts for "
            f"{format_duration(COOLDOWN)}. It still waits in its initrd."
        )
        await self._alert(m, text)
        await self._audit(m, None, "unlock", "cooldown", f"{MAX_ATTEMPTS} wrong attempts")
        return UnlockResult(False, text)

    async def _collect(
        self, m: Machine, people: list[int], verified: str, attempt: int, note: str
    ) -> tuple[int, str, Secret] | None:
        """Ask everyone at once; the first answer wins and the other prompts say who answered."""
        prompt = (
            f"🔐 {m.name} is waiting for its disk passphrase; initrd key {verified} verified.\n"
            "Reply with the passphrase: I delete your message at once and never store it."
        )
        if note:
            prompt = f"{note}\n{prompt}"
        asked: list[tuple[Question, MessageRef | None]] = []
        for user_id in people:
            question = self.s.answers.ask(user_id, user_id, secret=True, purpose=f"unlock {m.name}")
            ref = await self.s.chat.post(user_id, prompt, force_reply=True)
            if ref is not None:
                question.prompt_message_id = ref.message_id
            asked.append((question, ref))
        futures = [q.future for q, _ in asked]
        winner: Question | None = None
        try:
            done, _ = await asyncio.wait(
                futures, timeout=m.unlock_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for question, _ in asked:
                if question.future in done and not question.future.cancelled():
                    winner = question
                    break
        finally:
            late = (
                f"{winner.answered_by} already answered for {m.name}; I deleted your message."
                if winner is not None
                else f"That prompt for {m.name} expired; I deleted your message."
            )
            for question, _ in asked:
                if question is not winner:
                    self.s.answers.close(question, late_note=late)
        for question, ref in asked:
            if ref is None:
                continue
            if winner is None:
                await self.s.chat.edit(ref, f"⌛ The prompt to unlock {m.name} expired.")
            elif question is winner:
                await self.s.chat.edit(ref, f"🔐 {m.name}: passphrase received and deleted.")
            else:
                await self.s.chat.edit(ref, f"🔐 {m.name}: {winner.answered_by} is unlocking it.")
        if winner is None:
            return None
        text = winner.future.result()
        secret = Secret(text.encode())
        del text
        return winner.user_id, winner.answered_by or str(winner.user_id), secret

    async def _relay(self, m: Machine, pinned: str, secret: Secret) -> RelayOutcome:
        endpoint = SshEndpoint(
            host=m.host,
            port=m.initrd_port,
            user="root",
            client_key=self.s.settings.ssh_key,
            host_key=pinned,
        )
        mode = "auto" if m.unlock == "auto" else m.unlock
        try:
            conn = await connect(endpoint, timeout=self.s.tuning.ssh_timeout)
        except HostKeyMismatch as exc:
            await self._refuse(m, "relay", "initrd host key mismatch", "", pinned, str(exc))
            return RelayOutcome(Relay.DROPPED, "askpass", "initrd host key mismatch")
        except SshError as exc:
            return RelayOutcome(Relay.DROPPED, "askpass", str(exc))
        try:
            return await relay_passphrase(
                conn,
                secret,
                mode=mode,
                prompt_timeout=self.s.tuning.ssh_timeout,
                settle=self.s.tuning.unlock_settle,
            )
        finally:
            conn.close()

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
        try:
            presented = await fetch_host_key(m.host, m.ssh_port, timeout=self.s.tuning.ssh_timeout)
        except SshError:
            return False
        return same_key(presented, host_key)

    async def _refuse(
        self, m: Machine, trigger: str, why: str, presented: str, pinned: str = "", detail: str = ""
    ) -> None:
        lines = [f"🚨 {m.name}: {why}. The passphrase was NOT sent."]
        if pinned:
            lines.append(f"pinned:    {fingerprint(pinned)}")
        if presented:
            lines.append(f"presented: {fingerprint(presented)}")
        if not pinned:
            lines.append("Set initrd_host_key in the inventory, or reinstall with the bot.")
        else:
            lines.append(
                "If the machine was reinstalled outside the bot, update its key; otherwise "
                "someone may be impersonating it."
            )
        await self._alert(m, "\n".join(lines))
        await self._audit(m, None, "unlock", "refused", f"{why} ({trigger}) {detail}"[:300])

    async def _alert(self, m: Machine, text: str) -> None:
        await self._tell(self.s.access.people_for(m), text)

    async def _tell(self, people: list[int], text: str) -> None:
        await asyncio.gather(*(self.s.chat.post(p, text) for p in people))

    async def _audit(
        self, m: Machine, user_id: int | None, action: str, decision: str, detail: str
    ) -> None:
        await self.s.store.audit(
            user_id=user_id,
            username="",
            action=action,
            machine=m.name,
            decision=decision,
            detail=detail,
        )


def _explain(outcome: RelayOutcome) -> str:
    return {
        Relay.NOT_WAITING: "its initrd is not asking for a passphrase",
        Relay.DROPPED: "the initrd connection dropped",
        Relay.WRONG: "the passphrase was wrong",
        Relay.ACCEPTED: "accepted",
    }[outcome.result] + (f" ({outcome.detail})" if outcome.detail else "")


def _not_up(m: Machine) -> str:
    return (
        f"🚨 {m.name} took the passphrase but its system did not come up within "
        f"{format_duration(m.boot_timeout)}"
    )
