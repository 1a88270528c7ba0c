"""Unlocking a LUKS machine that waits in its initrd, from a phone.

The passphrase is only ever sent to an initrd that proves it holds the pinned initrd host
key: the bot logs in to it (pinned) before anyone is asked, so nobody types a passphrase the
bot cannot deliver, and the answer goes out over a connection that is already open.
Everyone allowed to unlock the machine is asked in their private chat; the first answer
wins, the others' prompts say who answered. The answer is deleted from the chat on arrival,
lives in a ``Secret`` for as long as the relay takes, and is wiped after it. The initrd's
verdict is judged as reference.md describes, and the unlock only counts once the system's
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

from bot.answers import Question
from bot.chat import MessageRef
from bot.detect import Detection, Found, Pins, detect
from bot.durations import format_duration
from bot.initrd import (
    AGENT,
    MAX_QUERIES,
    SYSTEMD_TRIES,
    Query,
    Relay,
    RelayOutcome,
    boot_id,
    list_queries,
    relay_passphrase,
)
from bot.inventory import Machine, UnlockMode
from bot.keys import fingerprint
from bot.reboot_watch import BootTimeout, Seen, presented_key, same_key, wait_for_boot
from bot.secret import Secret
from bot.services import Services
from bot.sops import SopsError, decrypt_value
from bot.ssh import HostKeyMismatch, SshEndpoint, SshError, connect, probe_tcp, run

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
COOLDOWN = 300.0
#: Prompts in one systemd session: every try of every disk, and a few refusals.
MAX_SYSTEMD_ROUNDS = SYSTEMD_TRIES * MAX_QUERIES + 3


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
        # systemd initrd: tries used per (machine, boot id, query message). systemd-cryptsetup
        # allows 3 per boot (docs/initrd.md), so the count restarts only with a new boot id.
        self._tries: dict[tuple[str, str, str], int] = {}
        # Pending "reboot it now?" offers after an initrd gave up, one per machine.
        self._offers: dict[str, asyncio.Task[None]] = {}

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
        tasks = [*self._sessions.values(), *self._offers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def tries_used(self, machine: str, boot: str) -> int:
        """systemd initrd: tries the bot spent on ``machine`` during boot ``boot``."""
        return sum(n for (name, b, _), n in self._tries.items() if name == machine and b == boot)

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
            for _ in range(MAX_QUERIES):
                outcome = await self._relay(m, link, pins, secret)
                # systemd: one query per LUKS volume; the sops passphrase is for all of them.
                if outcome.result is not Relay.ACCEPTED or not outcome.pending:
                    break
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
        if await self._initrd_flavour(m, link) == "systemd":
            return await self._prompted_systemd(m, link, pins, verified, people)
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
            if outcome.result is Relay.REFUSED:
                note = await self._refused_passphrase(m, user_id, outcome)
                people = [user_id]
                continue
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

    async def _initrd_flavour(self, m: Machine, link: _Link) -> UnlockMode:
        """askpass or systemd: the inventory's choice, what worked last time, or whether the
        initrd has the systemd agent at all (``--list`` is read-only)."""
        mode = self._flavour.get(m.name, m.unlock)
        if mode != "auto":
            return mode
        try:
            conn = await link.open()
            listed = await conn.run(f"{AGENT} --list", timeout=self.s.tuning.ssh_timeout)
        except (SshError, asyncssh.Error, OSError):
            return "auto"
        return "askpass" if listed.exit_status == 127 else "systemd"

    async def _queries(self, link: _Link) -> tuple[str, list[Query]] | None:
        """The boot id and the pending queries, waiting up to ``unlock_settle`` for the first
        one (systemd-cryptsetup may start asking after the initrd's sshd is up)."""
        deadline = time.monotonic() + self.s.tuning.unlock_settle
        while True:
            try:
                conn = await link.open()
            except SshError:
                return None
            boot = await boot_id(conn, self.s.tuning.ssh_timeout)
            queries = await list_queries(conn, self.s.tuning.ssh_timeout)
            if queries is None and conn.is_closed():
                return None
            if queries or time.monotonic() >= deadline:
                return (boot, queries) if queries is not None else None
            await asyncio.sleep(0.5)

    async def _prompted_systemd(
        self, m: Machine, link: _Link, pins: Pins, verified: str, people: list[int]
    ) -> UnlockResult:
        """One query per LUKS volume, 3 tries per boot each: ask for the disk that is
        asking, answer that query only, judge it, and go on until none is left."""
        resent = False
        note = ""
        last_user: int | None = None
        for _ in range(MAX_SYSTEMD_ROUNDS):
            found = await self._queries(link)
            if found is None:
                outcome = RelayOutcome(Relay.DROPPED, "systemd", "no answer on its login")
                return await self._undelivered(m, pins, outcome)
            boot, queries = found
            if not queries:
                return await self._not_asking(m, pins, boot, last_user)
            # The agent asks in the order --list shows: ask for that disk (docs/initrd.md).
            target = queries[0]
            key = (m.name, boot, target.message)
            used = self._tries.get(key, 0)
            detail = f"Disk {target.disk}: try {used + 1} of {SYSTEMD_TRIES} this boot."
            if len(queries) > 1:
                detail += f" ({len(queries)} disks are asking; one at a time.)"
            what = f"disk {target.what}"
            answer = await self._collect(m, people, verified, note, what=what, detail=detail)
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
            last_user = user_id
            people = [user_id]
            started = time.monotonic()
            try:
                outcome = await self._relay(m, link, pins, secret, target)
            finally:
                secret.wipe()
                await tidy
            if outcome.result is Relay.REFUSED:
                note = await self._refused_passphrase(m, user_id, outcome)
                continue
            if outcome.result in (Relay.WRONG, Relay.ACCEPTED):
                self._tries[key] = used + 1
            last_try = used + 1 >= SYSTEMD_TRIES
            verdict = outcome.result
            if verdict is Relay.ACCEPTED and outcome.stayed and last_try and not outcome.pending:
                # The last try, and the initrd stays without asking again: systemd-cryptsetup
                # has given up (its verdict goes to the console only).
                verdict = Relay.GAVE_UP
            await self._audit(
                m,
                user_id,
                by,
                verdict.value,
                f"disk {target.disk[:60]}, try {used + 1} of {SYSTEMD_TRIES} this boot",
            )
            if verdict is Relay.GAVE_UP:
                return await self._gave_up(m, pins, last_user)
            if verdict is Relay.WRONG:
                note = f"❌ wrong {target.what}, attempt {used + 2} of {SYSTEMD_TRIES}."
                if len(outcome.pending) > 1:
                    note += f" (That was disk {target.disk}.)"
                continue
            if verdict is Relay.NOT_WAITING and outcome.pending:
                # Another disk came first meanwhile: nothing was sent; ask for that one.
                note = f"⚠️ {outcome.detail}."
                continue
            if verdict is not Relay.ACCEPTED:
                return await self._undelivered(m, pins, outcome)
            others = [q for q in outcome.pending if q.message != target.message]
            if others:
                note = f"✅ disk {target.disk} took it; {len(others)} more disk(s) to go."
                continue
            await self.s.chat.post(
                user_id, f"Passphrase handed to {m.name}'s initrd; waiting for the system…"
            )
            return await self._report_up(m, pins, user_id, by, started)
        text = f"🚨 {m.name}: too many prompts in one unlock session; /unlock {m.name} again"
        return UnlockResult(False, text, await self._alert(m, text))

    async def _refused_passphrase(self, m: Machine, user_id: int, outcome: RelayOutcome) -> str:
        """A passphrase that cannot be typed into the prompt: say why; nothing was sent."""
        await self._audit(m, user_id, "", "refused", "control characters in the passphrase")
        await self.s.chat.post(
            user_id,
            f"⚠️ I did not send that passphrase to {m.name}: {outcome.detail}. "
            "Nothing was sent and no try was used.",
        )
        return "⚠️ the last answer was not sent (control characters); answer again."

    async def _not_asking(
        self, m: Machine, pins: Pins, boot: str, user_id: int | None
    ) -> UnlockResult:
        """A systemd initrd with no pending query: out of tries, or unlocked meanwhile."""
        if await self._system_up(m, pins.system):
            await self.s.store.update_machine(m.name, state="up")
            return UnlockResult(True, f"{m.name} is up (unlocked elsewhere)")
        if boot and self.tries_used(m.name, boot) >= SYSTEMD_TRIES:
            return await self._gave_up(m, pins, user_id)
        text = (
            f"⚠️ {m.name} waits in its initrd but nothing there asks for a passphrase. "
            f"systemd-cryptsetup stops asking after {SYSTEMD_TRIES} wrong tries per boot; "
            "if that happened, only a reboot brings new tries. The passphrase was NOT sent."
        )
        await self._audit(m, None, "", "not waiting", "no pending password query")
        told = await self._alert(m, text)
        self._offer_reboot(m, pins, [user_id] if user_id is not None else list(told))
        return UnlockResult(False, text, told)

    async def _gave_up(self, m: Machine, pins: Pins, user_id: int | None) -> UnlockResult:
        text = (
            f"🚨 {m.name}: its initrd has given up after {SYSTEMD_TRIES} wrong tries this boot "
            "(systemd-cryptsetup asks 3 times per boot). Only a reboot brings new tries."
        )
        await self._audit(m, user_id, "", "gave up", f"{SYSTEMD_TRIES} tries this boot")
        told = await self._alert(m, text)
        self._offer_reboot(m, pins, [user_id] if user_id is not None else list(told))
        return UnlockResult(False, text, told)

    def _offer_reboot(self, m: Machine, pins: Pins, people: list[int]) -> None:
        """Offer each of ``people`` a button that reboots the machine from its initrd."""
        if not people or m.name in self._offers:
            return
        task = asyncio.create_task(self._reboot_offer(m, pins, people), name=f"reboot-{m.name}")
        self._offers[m.name] = task
        task.add_done_callback(lambda _: self._offers.pop(m.name, None))

    async def _reboot_offer(self, m: Machine, pins: Pins, people: list[int]) -> None:
        confirmations = {p: self.s.confirmations.open(p) for p in people}
        question = f"🔁 Reboot {m.name} now, through its initrd login, to get new tries?"
        refs = await asyncio.gather(
            *(
                self.s.chat.post(p, question, buttons=c.buttons(f"Reboot {m.name} now"))
                for p, c in confirmations.items()
            )
        )
        futures = {c.future: p for p, c in confirmations.items()}
        try:
            done, _ = await asyncio.wait(
                futures, timeout=self.s.tuning.confirm_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for confirmation in confirmations.values():
                self.s.confirmations.close(confirmation)
        pressed = next((futures[f] for f in done if not f.cancelled() and f.result() is True), None)
        verdict = "⌛ expired" if not done else "🚫 not rebooted"
        if pressed is not None:
            verdict = "🔁 rebooting"
        for ref in refs:
            if ref is not None:
                await self.s.chat.edit(ref, f"{question}\n\n{verdict}")
        if pressed is None:
            return
        await self._audit(m, pressed, "", "reboot", "from the initrd after it gave up")
        timeout = self.s.tuning.ssh_timeout
        try:
            conn = await connect(self._endpoint(m, pins), timeout=timeout)
            async with conn:
                old = await boot_id(conn, timeout)
                await run(conn, ["reboot"], timeout=timeout)
        except SshError as exc:
            await self.s.chat.post(pressed, f"❌ could not reboot {m.name}: {exc}")
            return
        await self.s.chat.post(
            pressed, f"🔁 {m.name} is rebooting; I will ask for its passphrase when it is back."
        )
        await self._until_gone(m, pins, old)
        await self.follow_boot(m, trigger="reboot after the initrd gave up")

    async def _until_gone(self, m: Machine, pins: Pins, old: str) -> None:
        """Wait (bounded) until the initrd no longer answers with the old boot id, so the
        boot that follows is the new one."""
        deadline = time.monotonic() + self.s.tuning.reboot_down_timeout
        while time.monotonic() < deadline:
            try:
                conn = await connect(self._endpoint(m, pins), timeout=self.s.tuning.ssh_timeout)
            except SshError:
                return
            async with conn:
                current = await boot_id(conn, self.s.tuning.ssh_timeout)
            if not old or current != old:
                return
            await asyncio.sleep(self.s.tuning.reboot_poll)

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
        self,
        m: Machine,
        people: list[int],
        verified: str,
        note: str,
        *,
        what: str = "disk passphrase",
        detail: str = "",
    ) -> tuple[int, str, Secret, asyncio.Task[None]] | None:
        """Ask everyone at once; the first answer wins and the other prompts say who answered.

        Besides the answer, returns the edits of the prompts still to be made, so they go out
        while the passphrase is being relayed rather than before.
        """
        prompt = (
            f"🔐 {m.name} is waiting for its {what}; initrd key {verified} verified.\n"
            + (f"{detail}\n" if detail else "")
            + f"Reply with the {what.removeprefix('disk ')}: I delete your message at once "
            "and never store it."
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

    async def _relay(
        self, m: Machine, link: _Link, pins: Pins, secret: Secret, query: Query | None = None
    ) -> RelayOutcome:
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
                query=query,
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
