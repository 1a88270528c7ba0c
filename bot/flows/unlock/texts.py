"""What the unlock flow tells people, and the result a session ends with."""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat.asker import Tidy
from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.core.keys import fingerprint
from bot.remote.initrd import Relay, RelayOutcome
from bot.remote.place import Location, Pins, Place


@dataclass(frozen=True)
class UnlockResult:
    """How a session ended; ``told`` are the chats that already got the outcome."""

    ok: bool
    summary: str
    told: frozenset[int] = frozenset()
    # A passphrase this session handed over brought the system up (not: it was up already).
    unlocked: bool = False


def initrd_mismatch(seen: Location) -> bool:
    """Something answers on the initrd port with a key other than the pinned one."""
    return seen.place is Place.WRONG_KEY and seen.on_initrd_port


def mismatch_summary(m: Machine, pinned: str, presented: str) -> str:
    shown = f", presented {fingerprint(presented)}" if presented else ""
    return (
        f"{m.name}: initrd host key mismatch (pinned {fingerprint(pinned)}{shown}); "
        "passphrase not sent"
    )


def explain(outcome: RelayOutcome) -> str:
    return {
        Relay.NOT_WAITING: "its initrd is not asking for a passphrase",
        Relay.DROPPED: "the initrd went away before it took the passphrase",
        Relay.WRONG: "the passphrase was wrong",
        Relay.GAVE_UP: "its initrd has given up asking until the next boot",
        Relay.REFUSED: "the passphrase cannot be typed into the prompt",
        Relay.ACCEPTED: "accepted",
    }[outcome.result] + (f" ({outcome.detail})" if outcome.detail else "")


def not_up(m: Machine) -> str:
    return (
        f"🚨 {m.name} took the passphrase but its system did not come up within "
        f"{format_duration(m.boot_timeout)}"
    )


def prompt(m: Machine, verified: str, note: str, *, what: str, detail: str) -> str:
    text = (
        f"🔐 {m.name} is waiting for its {what}; initrd key {verified} verified.\n"
        + (f"{detail}\n" if detail else "")
        + f"Reply with the {what.removeprefix('disk ')}: I delete your message at once "
        "and never store it."
    )
    return f"{note}\n{text}" if note else text


def tidy(m: Machine) -> Tidy:
    """What the unlock prompts say once someone answered, or nobody did."""
    return Tidy(
        answered=f"🔐 {m.name}: passphrase received and deleted.",
        others=f"🔐 {m.name}: {{by}} is unlocking it.",
        expired=f"⌛ The prompt to unlock {m.name} expired.",
    )


def late(m: Machine, by: str | None) -> str:
    if by is not None:
        return f"{by} already answered for {m.name}; I deleted your message."
    return f"That prompt for {m.name} expired; I deleted your message."


def refusal(m: Machine, pins: Pins, why: str, presented: str) -> str:
    """The loud alert when the passphrase must not go out, with both fingerprints."""
    lines = [f"🚨 {m.name}: {why}. The passphrase was NOT sent."]
    if pins.initrd:
        lines.append(f"pinned:    {fingerprint(pins.initrd)} ({pins.initrd_source})")
    if presented:
        shown = presented if presented.startswith("SHA256:") else fingerprint(presented)
        lines.append(f"presented: {shown}")
    lines += [f"contradiction, {c}" for c in pins.conflicts]
    if not pins.initrd:
        where = m.initrd_host_key_file or "initrd_host_key_file"
        lines.append(
            "Set initrd_host_key in the inventory; or, once the system is up, the bot "
            f"reads it from {where} itself."
        )
    else:
        lines.append(
            "If the machine was reinstalled outside the bot, update its key; otherwise "
            "someone may be impersonating it."
        )
    return "\n".join(lines)
