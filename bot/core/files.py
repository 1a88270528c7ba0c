"""Files and folders only the bot's user may read: the database, job logs, staging.

The database holds the audit log and the pinned keys, the job logs hold what targets
printed: ``umask`` must not decide who else reads them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make ``path`` itself mode 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path, *companions: str) -> Path:
    """Create ``path`` empty if missing, mode 0600; existing ``path + suffix`` files too.

    SQLite creates its ``-wal`` and ``-shm`` files with the database file's mode, so a 0600
    database gives 0600 companions; ones left by an older run are tightened here.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    for suffix in companions:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)
    return path
