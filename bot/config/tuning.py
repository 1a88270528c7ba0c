"""Timings and bounds that are not operator settings; tests shorten them."""

from __future__ import annotations

from dataclasses import dataclass


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
    probe_concurrency: int = 64
    alert_after: int = 3
    alert_batch: float = 2.0
    disk_alert_percent: int = 90
    check_timeout: float = 5.0
    reboot_down_timeout: float = 300.0
