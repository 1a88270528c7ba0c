"""Everything a handler or flow needs, built once by the composition root."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bot.chat.access import Access
from bot.chat.confirm import Confirmations
from bot.chat.port import ChatPort
from bot.chat.questions import Answers
from bot.config.inventory import Inventory
from bot.config.settings import Settings
from bot.jobs.runner import JobRunner
from store import Store


@dataclass(frozen=True)
class Tuning:
    """Timings that are not operator settings; tests shorten them."""

    confirm_timeout: float = 120.0
    answer_timeout: float = 300.0
    progress_interval: float = 3.0
    max_parallel_jobs: int = 4
    ssh_timeout: float = 10.0
    reboot_poll: float = 1.0
    nixos_anywhere_timeout: float = 3 * 3600.0
    unlock_settle: float = 10.0
    probe_concurrency: int = 32
    alert_after: int = 3
    alert_batch: float = 2.0
    disk_alert_percent: int = 90
    check_timeout: float = 5.0
    reboot_down_timeout: float = 300.0


@dataclass
class Services:
    """The bot's long-lived parts; ``commands`` is filled as handler families register."""

    settings: Settings
    inventory: Inventory
    store: Store
    access: Access
    chat: ChatPort
    jobs: JobRunner
    answers: Answers
    tuning: Tuning = field(default_factory=Tuning)
    confirmations: Confirmations = field(default_factory=Confirmations)
    commands: set[str] = field(default_factory=set)
    started_at: float = field(default_factory=time.monotonic)
    # The example inventory names hosts that are not the user's: never probe them.
    probes_enabled: bool = True
