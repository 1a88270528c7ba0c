"""The parts every flow is built of, built once by the composition root (``bot.app``).

A flow's constructor takes these and names only what is its own beyond them (another
flow it hands over to), so adding a shared part changes one dataclass, not every
constructor and every call. Timings come from ``tuning`` under their own names.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat.access import Access
from bot.chat.answers import Answers
from bot.chat.asker import Asker
from bot.chat.confirm import Confirmations
from bot.chat.port import ChatPort
from bot.config.current import Current
from bot.config.settings import Settings
from bot.config.tuning import Tuning
from bot.core.sops import SopsReader
from bot.jobs.runner import JobRunner
from bot.remote.fleet import Fleet
from store import Store
from store.health import HealthStore


@dataclass(frozen=True)
class Basics:
    """Settings and timings, what is in force, the store, the chat, jobs and machines."""

    settings: Settings
    tuning: Tuning
    current: Current
    store: Store
    health: HealthStore
    chat: ChatPort
    answers: Answers
    confirmations: Confirmations
    access: Access
    asker: Asker
    jobs: JobRunner
    fleet: Fleet
    sops: SopsReader
    #: False for the example inventory: its machines are nobody's, never probed.
    probes_enabled: bool = True
