"""Everything a handler or flow needs, built once by the composition root."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bot.access import Access
from bot.answers import Answers
from bot.chat import ChatPort
from bot.confirm import Confirmations
from bot.inventory import Inventory
from bot.jobs import JobRunner
from bot.settings import Settings
from store import Store

#: Per-step bounds of a nixos-anywhere run, in seconds. A step with a bound longer than any
#: real run needs: uploading the closure and installing on a slow VPS take the longest.
STEP_TIMEOUTS: dict[str, float] = {
    "start": 600.0,
    "upload keys": 300.0,
    "facts": 300.0,
    "kexec": 900.0,
    "disko": 1800.0,
    "install": 7200.0,
    "reboot": 300.0,
}


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
    #: Longest each nixos-anywhere step may run (keyed by ``Phase`` value, "start" before
    #: its first step line). ssh-copy-id and the reboot wait loop for ever by themselves.
    step_timeouts: dict[str, float] = field(default_factory=lambda: dict(STEP_TIMEOUTS))
    #: Between SIGTERM and SIGKILL when a run is stopped: time for its EXIT trap.
    stop_grace: float = 10.0
    #: ``nix build`` of the disko script and the system before nixos-anywhere starts.
    build_timeout: float = 2 * 3600.0
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
