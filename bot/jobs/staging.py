"""A job's private staging folder under the state dir, and its removal.

An install writes a host's private keys here for nixos-anywhere to copy (the layout is
``bot.flows.deploy.staging``); the folder is 0700, named after the job, and removed when
the job ends or, after a crash, at the next start (``bot.flows.recovery``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Each job's folder is ``<state_dir>/staging/job-<id>``.
FOLDER_PREFIX = "job-"


def staging_parent(state_dir: Path) -> Path:
    """The folder that holds every job's staging folder."""
    return state_dir / "staging"


def make_staging_dir(state_dir: Path, job_id: int) -> Path:
    parent = staging_parent(state_dir)
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(parent, 0o700)
    root = parent / f"{FOLDER_PREFIX}{job_id}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(mode=0o700)
    os.chmod(root, 0o700)
    return root


def remove(root: Path) -> None:
    """The folder and the known_hosts file beside it (the confirmed key nixos-anywhere
    checked the target against)."""
    shutil.rmtree(root, ignore_errors=True)
    root.parent.joinpath(f"{root.name}.known_hosts").unlink(missing_ok=True)
