"""History that would otherwise grow with the fleet forever.

Every ``PRUNE_EVERY`` the bot forgets what is older than ``DEPLOYBOT_KEEP_DAYS`` days: the
probe counts (``probe_hours``) of those hours; the logs of jobs that ended before then
(their files under ``state/jobs``, their events and their rows' ``log_path``; the job row
itself and its result stay); reboot tests (each machine's last finished one stays, /status
shows it); incidents that ended; systemd tries of boots long over; the report's events.
A log file that no row names any more is removed by age.

The audit log says who did what, which is asked about long after: it is kept
``AUDIT_MIN_DAYS`` days, or ``DEPLOYBOT_KEEP_DAYS`` when that is longer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from store import Store
from store.health import HealthStore
from store.remembered import SystemdTries

log = logging.getLogger(__name__)
KEEP_DAYS = 90
AUDIT_MIN_DAYS = 365
PRUNE_EVERY = 24 * 3600.0
FIRST_PRUNE = 600.0  # after the start, once the bot has settled


@dataclass(frozen=True)
class Pruned:
    probe_hours: int
    job_logs: int
    reboot_tests: int = 0
    incidents: int = 0
    systemd_tries: int = 0
    audit: int = 0
    machine_events: int = 0


class Retention:
    """Prunes what is older than ``keep_days``."""

    def __init__(
        self, store: Store, health: HealthStore, log_dir: Path, *, keep_days: int = KEEP_DAYS
    ) -> None:
        self.store = store
        self.health = health
        self.log_dir = log_dir
        self.keep_days = keep_days
        self.tries = SystemdTries(store)

    @property
    def audit_days(self) -> int:
        return max(self.keep_days, AUDIT_MIN_DAYS)

    async def prune(self, now: datetime | None = None) -> Pruned:
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=self.keep_days)
        before = cutoff.isoformat(timespec="milliseconds")
        hours = await self.health.prune_probes(cutoff)
        paths = await self.store.forget_job_logs(before)
        removed = await asyncio.to_thread(self._remove, paths, cutoff.timestamp())
        pruned = Pruned(
            probe_hours=hours,
            job_logs=removed,
            reboot_tests=await self.health.prune_reboot_tests(before),
            incidents=await self.health.prune_incidents(before),
            systemd_tries=await self.tries.prune(before),
            machine_events=await self.health.prune_machine_events(before),
            audit=await self.store.prune_audit(
                (now - timedelta(days=self.audit_days)).isoformat(timespec="milliseconds")
            ),
        )
        if any(dataclasses.astuple(pruned)):
            log.info("pruned before %s: %s", cutoff, pruned)
        return pruned

    def _remove(self, paths: list[str], before: float) -> int:
        """The named logs (only inside the log folder), then unnamed ones by age."""
        folder = self.log_dir.resolve()
        removed = 0
        for text in paths:
            path = Path(text).resolve()
            if path.parent == folder and path.suffix == ".log":
                removed += _unlink(path)
        if folder.is_dir():
            for path in folder.glob("*.log"):
                try:
                    old = path.stat().st_mtime < before
                except OSError:
                    continue
                if old:
                    removed += _unlink(path)
        return removed


def _unlink(path: Path) -> int:
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("could not remove old job log %s: %s", path.name, exc.strerror)
        return 0
    return 1
