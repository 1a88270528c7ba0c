"""What became of a yes/no question: confirmed, cancelled, or expired with nobody answering.

One value instead of ``True``/``False``/``None``, so every place that words the outcome
(the edited prompt, a job's end, the audit) says it the same way.
"""

from __future__ import annotations

from enum import Enum


class Verdict(Enum):
    """The answer to buttons only one person may press."""

    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @classmethod
    def of(cls, pressed: bool | None) -> Verdict:
        """From a button press: True (yes), False (no), None (nobody pressed in time)."""
        if pressed is None:
            return cls.EXPIRED
        return cls.CONFIRMED if pressed else cls.CANCELLED

    @property
    def yes(self) -> bool:
        return self is Verdict.CONFIRMED

    @property
    def shown(self) -> str:
        """The line that replaces the buttons."""
        return {"confirmed": "✅ confirmed", "cancelled": "🚫 cancelled", "expired": "⌛ expired"}[
            self.value
        ]

    @property
    def why_not(self) -> str:
        """Why nothing happened, for a job's end ("…; nothing was changed")."""
        if self is Verdict.EXPIRED:
            return "the confirmation expired"
        if self is Verdict.CANCELLED:
            return "cancelled at the confirmation"
        return "confirmed"
