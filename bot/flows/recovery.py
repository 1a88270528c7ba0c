"""After a crash: what a killed bot left behind is undone, and machines are looked at again.

A nixos-anywhere started by a previous process runs in its own session and outlives a
SIGKILL of the bot; the staging folders it read hold hosts' private keys. Both go, and each
machine whose job was interrupted is probed so the chat is told where it stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from bot.config.inventory import Machine
from bot.core.keys import fingerprint
from bot.core.poll import PollTimeout, poll_until
from bot.flows.deploy import staging
from bot.remote.fleet import Fleet
from bot.remote.place import Place
from store import Store, utcnow

log = logging.getLogger(__name__)

ORPHAN_GRACE = 5.0
ORPHAN_POLL = 0.1


async def clear_crash_leftovers(state_dir: Path) -> list[str]:
    """At start, undo what a killed bot left behind: installs still running, staging folders.

    A nixos-anywhere started by a previous process runs in its own session and outlives a
    SIGKILL of the bot; nobody reads its output or can confirm anything it does, so it is
    stopped, as a clean shutdown would have. The staging folders hold hosts' private keys.
    Returns one line per process stopped.
    """
    parent = state_dir / "staging"
    stopped = [pid for pid in _processes_staging_from(parent) if pid != os.getpid()]
    for pid in stopped:
        _signal_group_of(pid, signal.SIGTERM)

    async def survivors() -> bool:
        return any(_alive(pid) for pid in stopped)

    with contextlib.suppress(PollTimeout):
        await poll_until(
            survivors, lambda alive: not alive, timeout=ORPHAN_GRACE, interval=ORPHAN_POLL
        )
    for pid in stopped:
        if _alive(pid):
            _signal_group_of(pid, signal.SIGKILL)
    if parent.is_dir():
        for leftover in parent.iterdir():
            await asyncio.to_thread(staging.remove, leftover)
    for pid in stopped:
        log.warning("stopped process %s left running by a previous bot process", pid)
    return [f"process {pid}" for pid in stopped]


def _processes_staging_from(parent: Path) -> list[int]:
    """Processes whose arguments name a folder in ``parent`` (nixos-anywhere --extra-files)."""
    try:
        ours = parent.resolve()
    except OSError:
        return []
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        for arg in argv:
            path = cwd / arg.decode("utf-8", "replace")
            if path.name.startswith("job-") and ours in (path.parent, path.parent.resolve()):
                found.append(int(proc.name))
                break
    return found


def _signal_group_of(pid: int, sig: signal.Signals) -> None:
    """Signal the process's whole group when it leads one (ssh children die with it)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def look_after_interruption(fleet: Fleet, store: Store, machine: Machine) -> str:
    """Look at a machine whose job was interrupted and record where it stands now."""
    seen = await (await fleet.target(machine)).locate()
    name = machine.name
    texts = {
        Place.SYSTEM: f"{name} answers with its installed system's key: it is up",
        Place.INITRD: f"{name} waits in its initrd (key verified): /unlock {name}",
        Place.NOTHING: f"{name} does not answer on SSH now",
        Place.INSTALLER: (
            f"{name} is still in its installer; its disk may be half written: /deploy {name}"
        ),
    }
    text = texts.get(
        seen.place, f"{name} answers with a key I do not know ({fingerprint(seen.presented)})"
    )
    await store.update_machine(name, state=seen.place, detail=text, last_probe_at=utcnow())
    return text
