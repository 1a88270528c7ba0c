"""What the unlock flow tells people, and the result a session ends with."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.core.keys import fingerprint
from bot.remote.initrd import Relay, RelayOutcome
from bot.remote.place import Location, Place


@dataclass(frozen=True)
class UnlockResult:
    """How a session ended; ``told`` are the chats that already got the outcome."""

    ok: bool
    summary: str
    told: frozenset[int] = frozenset()


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
