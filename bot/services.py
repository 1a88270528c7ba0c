"""Everything a handler or flow needs, built once by the composition root."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bot.access import Access
from bot.answers import Answers
from bot.inventory import Inventory
from bot.settings import Settings
from store import Store


@dataclass
class Services:
    """The bot's long-lived parts; ``commands`` is filled as handler families register."""

    settings: Settings
    inventory: Inventory
    store: Store
    access: Access
    answers: Answers = field(default_factory=Answers)
    commands: set[str] = field(default_factory=set)
    started_at: float = field(default_factory=time.monotonic)
    # The example inventory names hosts that are not the user's: never probe them.
    probes_enabled: bool = True
