"""One unlock session: one conversation with one initrd, from the first look to the
system's own SSH answering with its pinned key (or a clear reason why not).

The session looks, logs in to the initrd before anyone is asked, and runs the steps both
initrds share. A passphrase passes through one exchange (:meth:`UnlockSession.exchange`:
ask, relay, wipe) or, for auto-unlock, through :meth:`UnlockSession._auto`; the loops
that ask again (``askpass``, ``systemd``) are the unlocker's choice and call these steps.
The steps stay in one module because they share the session's state (its login to the
initrd, the answers it keeps as redaction needles until it ends, its memory of tries).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.chat.access import Access
from bot.chat.asker import Answer, Asker
from bot.chat.port import ChatPort
from bot.config.inventory import UnlockMode
from bot.config.tuning import Tuning
from bot.core.durations import format_duration
from bot.core.keys import fingerprint
from bot.core.poll import PollTimeout, poll_until
from bot.core.secret import Secret, redact
from bot.core.sops import SopsError, SopsReader
from bot.flows.basics import Basics
from bot.flows.unlock import texts
from bot.flows.unlock.memory import Memory
from bot.flows.unlock.texts import UnlockResult
from bot.remote.initrd import MAX_QUERIES, Query, Relay, RelayOutcome, has_agent, relay_passphrase
from bot.remote.place import Location, Place
from bot.remote.ssh import HostKeyMismatch, SshError
from bot.remote.target import Target
from store import Store

MAX_ATTEMPTS = 3
COOLDOWN = 300.0
ASK_AGAIN = "(asking again: nobody answered)"
#: Offers a reboot of a machine whose initrd gave up, to these people.
OfferReboot = Callable[[Target, list[int]], None]


@dataclass(frozen=True)
class Tools:
    """What every session uses of the shared parts: the store, the chats, sops, and the
    timings (``tuning.ssh_timeout`` for an initrd's prompt, ``tuning.unlock_settle``)."""

    store: Store
    chat: ChatPort
    asker: Asker
    access: Access
    sops: SopsReader
    tuning: Tuning

    @classmethod
    def of(cls, basics: Basics) -> Tools:
        return cls(
            store=basics.store,
            chat=basics.chat,
            asker=basics.asker,
            access=basics.access,
            sops=basics.sops,
            tuning=basics.tuning,
        )


@dataclass(frozen=True)
class Exchange:
    """One answer handed over: who gave it, when, and what the initrd did with it."""

    user_id: int
    by: str
    started: float
    outcome: RelayOutcome


class UnlockSession:
    """Unlocks one machine once; the unlocker makes one per attempt and remembers for it."""

    def __init__(
        self, target: Target, tools: Tools, memory: Memory, offer_reboot: OfferReboot
    ) -> None:
        self.target = target
        self.m = target.machine
        self.tools = tools
        self.memory = memory
        self.offer_reboot = offer_reboot
        self.login = target.login(initrd=True)
        # Every answer handed over, kept until the session ends: a hostile initrd may echo
        # one back (in a prompt, a disk name), and nothing it says is shown unredacted.
        self._given: list[Secret] = []

    def remember(self, secret: Secret) -> None:
        """Keep a copy of an answer as a redaction needle until the session ends."""
        if secret and not secret.wiped:
            self._given.append(Secret(secret.reveal()))

    def scrub(self, text: str) -> str:
        return redact(text, self._given) if self._given else text

    @property
    def verified(self) -> str:
        return fingerprint(self.target.pins.initrd)

    async def run(
        self, trigger: str, ask: list[int] | None, seen: Location | None, prompted: Prompted
    ) -> UnlockResult:
        """The session, asking people through ``prompted`` unless it auto-unlocks; what it
        ends with never holds an answer it handed over."""
        try:
            result = await self._run(trigger, ask, seen, prompted)
            return dataclasses.replace(result, summary=self.scrub(result.summary))
        finally:
            for given in self._given:
                given.wipe()
            self._given.clear()

    async def _run(
        self, trigger: str, ask: list[int] | None, seen: Location | None, prompted: Prompted
    ) -> UnlockResult:
        m, pins = self.m, self.target.pins
        if not pins.initrd:
            told = await self.refuse(trigger, "no pinned initrd host key")
            return UnlockResult(
                False, f"{m.name}: no pinned initrd host key; passphrase not sent", told
            )
        if seen is None:
            seen = await self.target.locate(timeout=self.target.reach.ssh_timeout)
        if seen.place is Place.SYSTEM:
            await self.tools.store.update_machine(m.name, state=Place.SYSTEM)
            return UnlockResult(True, f"{m.name} is already up")
        if texts.initrd_mismatch(seen):
            told = await self.refuse(trigger, "initrd host key mismatch", seen.presented)
            return UnlockResult(False, texts.mismatch_summary(m, pins.initrd, seen.presented), told)
        if seen.place is not Place.INITRD:
            await self.audit(None, "", "not waiting", f"{trigger}: {seen.detail}")
            return UnlockResult(False, f"{m.name} is not waiting in its initrd ({seen.detail})")
        await self.tools.store.update_machine(m.name, state=Place.INITRD)
        try:
            refused = await self._login(trigger)
            if refused is not None:
                return refused
            if m.auto_unlock and m.luks_passphrase_secret and m.secrets_file is not None:
                return await self._auto(trigger)
            people = ask or self.tools.access.people_for(m)
            if not people:
                return UnlockResult(False, f"nobody may unlock {m.name}: add operators or admins")
            return await prompted(self, people)
        finally:
            self.login.close()

    async def _login(self, trigger: str) -> UnlockResult | None:
        """Log in to the initrd before asking anyone; a result when that is impossible."""
        try:
            await self.login.open()
        except HostKeyMismatch as exc:
            told = await self.refuse(trigger, "initrd host key mismatch", exc.actual_fingerprint)
            return UnlockResult(
                False, texts.mismatch_summary(self.m, self.target.pins.initrd, ""), told
            )
        except SshError as exc:
            text = f"🚨 {self.m.name} waits in its initrd, but I cannot log in to it: {exc}"
            await self.audit(None, "", "failed", f"{trigger}: initrd login: {exc}"[:300])
            return UnlockResult(False, text, await self.alert(text))
        return None

    async def _auto(self, trigger: str) -> UnlockResult:
        m = self.m
        assert m.secrets_file is not None
        started = time.monotonic()
        try:
            secret = await self.tools.sops.value(m.secrets_file, m.luks_passphrase_secret)
        except SopsError as exc:
            text = f"🚨 {m.name} waits in its initrd, and auto-unlock failed: {exc}"
            await self.audit(None, "", "failed", str(exc)[:200], action="auto-unlock")
            return UnlockResult(False, text, await self.alert(text))
        try:
            self.remember(secret)
            for _ in range(MAX_QUERIES):
                outcome = await self._relay(secret)
                # systemd: one query per LUKS volume; the sops passphrase is for all of them.
                if outcome.result is not Relay.ACCEPTED or not outcome.pending:
                    break
        finally:
            secret.wipe()
        await self.audit(None, "", outcome.result.value, outcome.flavour, action="auto-unlock")
        if outcome.result is not Relay.ACCEPTED:
            text = f"🚨 auto-unlock of {m.name} failed: {texts.explain(outcome)}"
            return UnlockResult(False, text, await self.alert(text))
        up = await self.wait_up()
        took = format_duration(time.monotonic() - started)
        if not up:
            return UnlockResult(False, texts.not_up(m), await self.alert(texts.not_up(m)))
        text = (
            f"🔓 {m.name} auto-unlocked ({trigger}; initrd key {self.verified} verified), "
            f"up after {took}"
        )
        told = await self.alert(text)
        return UnlockResult(True, f"auto-unlocked, up after {took}", told, unlocked=True)

    async def initrd_flavour(self) -> UnlockMode:
        """askpass or systemd: the inventory's choice, what worked last time, or whether the
        initrd has the systemd agent at all (``--list`` is read-only)."""
        mode = self.memory.flavour.get(self.m.name, self.m.unlock)
        if mode != "auto":
            return mode
        try:
            agent = await has_agent(await self.login.open(), self.tools.tuning.ssh_timeout)
        except SshError:
            return "auto"
        if agent is None:
            return "auto"
        return "systemd" if agent else "askpass"

    # -- the steps both initrds share --------------------------------------------------------

    async def _collect(
        self, people: list[int], note: str, *, what: str = "disk passphrase", detail: str = ""
    ) -> Answer | None:
        """Ask everyone at once; the first answer wins and the other prompts say who answered."""
        m = self.m
        return await self.tools.asker.ask_first(
            people,
            self.scrub(texts.prompt(m, self.verified, note, what=what, detail=detail)),
            purpose=f"unlock {m.name}",
            timeout=m.unlock_timeout,
            tidy=texts.tidy(m),
            late=lambda by: texts.late(m, by),
        )

    async def exchange(
        self,
        people: list[int],
        note: str,
        *,
        what: str = "disk passphrase",
        detail: str = "",
        query: Query | None = None,
    ) -> Exchange | None:
        """Ask, hand the first answer over, wipe it; None when nobody answered in time."""
        answer = await self._collect(people, note, what=what, detail=detail)
        if answer is None:
            return None
        started = time.monotonic()
        self.remember(answer.secret)
        try:
            outcome = await self._relay(answer.secret, query)
        finally:
            answer.secret.wipe()
            await answer.tidying
        return Exchange(answer.user_id, answer.by, started, outcome)

    async def _relay(self, secret: Secret, query: Query | None = None) -> RelayOutcome:
        """Hand ``secret`` over on the open login; a stale one is made anew once, since
        nothing was sent on it yet."""
        m = self.m
        mode = self.memory.flavour.get(m.name, m.unlock)
        outcome = RelayOutcome(Relay.DROPPED, "askpass", "no connection")
        for _ in range(2):
            try:
                conn = await self.login.open()
            except HostKeyMismatch as exc:
                await self.refuse("relay", "initrd host key mismatch", exc.actual_fingerprint)
                return RelayOutcome(Relay.DROPPED, "askpass", "initrd host key mismatch")
            except SshError as exc:
                return RelayOutcome(Relay.DROPPED, "askpass", str(exc))
            outcome = await relay_passphrase(
                conn,
                secret,
                mode=mode,
                prompt_timeout=self.tools.tuning.ssh_timeout,
                settle=self.tools.tuning.unlock_settle,
                query=query,
            )
            if outcome.result is not Relay.DROPPED:
                break
            self.login.close()
        if outcome.result in (Relay.ACCEPTED, Relay.WRONG) and m.unlock == "auto":
            self.memory.flavour[m.name] = outcome.flavour
        return outcome

    async def nobody_answered(self) -> UnlockResult:
        waited = format_duration(2 * self.m.unlock_timeout)
        text = f"🚨 nobody unlocked {self.m.name} within {waited}; it still waits in its initrd"
        await self.audit(None, "", "expired", f"nobody answered within {waited}")
        return UnlockResult(False, text, await self.alert(text))

    async def refused_passphrase(self, user_id: int, outcome: RelayOutcome) -> str:
        """A passphrase that cannot be typed into the prompt: say why; nothing was sent."""
        await self.audit(user_id, "", "refused", "control characters in the passphrase")
        await self.tools.chat.post(
            user_id,
            f"⚠️ I did not send that passphrase to {self.m.name}: {outcome.detail}. "
            "Nothing was sent and no try was used.",
        )
        return "⚠️ the last answer was not sent (control characters); answer again."

    async def up_meanwhile(self) -> UnlockResult | None:
        """The result when the system came up meanwhile (unlocked elsewhere), else None."""
        target = self.target
        if not target.pins.system or (await target.locate()).place is not Place.SYSTEM:
            return None
        await self.tools.store.update_machine(self.m.name, state=Place.SYSTEM)
        return UnlockResult(True, f"{self.m.name} is up (unlocked elsewhere)")

    async def undelivered(self, outcome: RelayOutcome) -> UnlockResult:
        """The initrd stopped asking, or went away, before it took the passphrase."""
        m = self.m
        up = await self.up_meanwhile()
        if up is not None:
            return up
        text = (
            f"⚠️ {m.name}: {texts.explain(outcome)}. The passphrase was NOT sent. "
            f"/unlock {m.name} once its initrd answers again."
        )
        return UnlockResult(False, text, await self.alert(text))

    async def handed_over(self, user_id: int, by: str, started: float) -> UnlockResult:
        """The initrd took the last answer: tell whoever gave it, then wait for the system."""
        m = self.m
        await self.tools.chat.post(
            user_id, f"Passphrase handed to {m.name}'s initrd; waiting for the system…"
        )
        up = await self.wait_up()
        took = format_duration(time.monotonic() - started)
        if not up:
            await self.audit(user_id, by, "not up", f"within {format_duration(m.boot_timeout)}")
            return UnlockResult(False, texts.not_up(m), await self.alert(texts.not_up(m)))
        await self.audit(user_id, by, "up", f"after {took}")
        text = f"🔓 {m.name} unlocked by {by}, up after {took}"
        told = await self.alert(text)
        return UnlockResult(True, f"unlocked by {by}, up after {took}", told, unlocked=True)

    async def cool_down(self) -> UnlockResult:
        m = self.m
        self.memory.cooldown_until[m.name] = time.monotonic() + COOLDOWN
        text = (
            f"🚨 {MAX_ATTEMPTS} wrong passphrases for {m.name}; no more attempts for "
            f"{format_duration(COOLDOWN)}. It still waits in its initrd."
        )
        await self.audit(None, "", "cooldown", f"{MAX_ATTEMPTS} wrong attempts")
        return UnlockResult(False, text, await self.alert(text))

    async def wait_up(self) -> bool:
        """Wait for the system's SSH: its pinned key, or (none pinned) an open port."""
        target, m = self.target, self.m
        try:
            if not target.pins.system:
                await poll_until(
                    lambda: target.port_open(timeout=2.0),
                    bool,
                    timeout=m.boot_timeout,
                    interval=target.reach.poll,
                )
                await self.tools.store.update_machine(
                    m.name, state=Place.SYSTEM, detail="host key not pinned"
                )
                return True
            await target.wait_for({Place.SYSTEM}, timeout=m.boot_timeout)
        except PollTimeout:
            return False
        await self.tools.store.update_machine(m.name, state=Place.SYSTEM)
        return True

    # -- telling people ------------------------------------------------------------------------

    def offer_a_reboot(self, user_id: int | None, told: frozenset[int]) -> None:
        """Offer a reboot of an initrd that gave up: to who answered last, else to all told."""
        self.offer_reboot(self.target, [user_id] if user_id is not None else list(told))

    async def refuse(self, trigger: str, why: str, presented: str = "") -> frozenset[int]:
        """The loud alert when the passphrase must not go out, with both fingerprints."""
        await self.audit(None, "", "refused", f"{why} ({trigger})"[:300])
        return await self.alert(texts.refusal(self.m, self.target.pins, why, presented))

    async def alert(self, text: str) -> frozenset[int]:
        text = self.scrub(text)
        people = self.tools.access.people_for(self.m)
        await asyncio.gather(*(self.tools.chat.post(p, text) for p in people))
        return frozenset(people)

    async def audit(
        self,
        user_id: int | None,
        username: str,
        decision: str,
        detail: str,
        *,
        action: str = "unlock",
    ) -> None:
        """Every attempt and verdict: who, which machine, what came of it — never the secret."""
        await self.tools.store.audit(
            user_id=user_id,
            username=username.lstrip("@"),
            action=action,
            machine=self.m.name,
            decision=decision,
            detail=self.scrub(detail),
        )


#: A loop that asks people until the initrd took a passphrase, or says why not.
Prompted = Callable[[UnlockSession, list[int]], Awaitable[UnlockResult]]
