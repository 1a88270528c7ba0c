"""Timings and bounds that are not operator settings; tests shorten them."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """Timings that are not operator settings; tests shorten them.

    A flow reads them from ``Basics.tuning`` under these names; a lower part (the job
    runner, a Target's ``Reach``, the chat surface's families) is handed the values it uses.
    """

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
    probe_concurrency: int = 64
    alert_after: int = 3
    alert_batch: float = 2.0
    disk_alert_percent: int = 90
    check_timeout: float = 5.0
    reboot_down_timeout: float = 300.0
