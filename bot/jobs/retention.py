"""History that would otherwise grow with the fleet forever: probe counts and job logs.

Every ``PRUNE_EVERY`` the bot forgets the probe counts (``probe_hours``) of hours older than
``DEPLOYBOT_KEEP_DAYS`` days, and the logs of jobs that ended before then: their files
under ``state/jobs``, their events and their rows' ``log_path`` (the job row itself, its
result and the audit log stay). A log file that no row names any more is removed by age.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from store import Store
from store.health import HealthStore

log = logging.getLogger(__name__)
KEEP_DAYS = 90
PRUNE_EVERY = 24 * 3600.0
FIRST_PRUNE = 600.0  # after the start, once the bot has settled


@dataclass(frozen=True)
class Pruned:
    probe_hours: int
    job_logs: int


class Retention:
    """Prunes what is older than ``keep_days``."""

    def __init__(
        self, store: Store, records: HealthStore, log_dir: Path, *, keep_days: int = KEEP_DAYS
    ) -> None:
        self.store = store
        self.records = records
        self.log_dir = log_dir
        self.keep_days = keep_days

    async def prune(self, now: datetime | None = None) -> Pruned:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.keep_days)
        hours = await self.records.prune_probes(cutoff)
        paths = await self.store.forget_job_logs(cutoff.isoformat(timespec="milliseconds"))
        removed = await asyncio.to_thread(self._remove, paths, cutoff.timestamp())
        if hours or removed:
            log.info("pruned %d probe hours and %d job logs before %s", hours, removed, cutoff)
        return Pruned(hours, removed)

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
