"""At start: what a previous process left behind is undone, and people are told.

A nixos-anywhere started by a previous process runs in its own session and outlives a
SIGKILL of the bot; the staging folders it read hold hosts' private keys. Both go, the jobs
it left running end as interrupted, each machine concerned is probed so the chat is told
where it stands, and admins hear of host keys whose sources contradict each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from bot.config.inventory import Machine
from bot.core.keys import fingerprint
from bot.core.poll import PollTimeout, poll_until
from bot.flows.adopt import contradictions
from bot.flows.basics import Basics
from bot.flows.rollout.board import where_it_stood
from bot.flows.rollout.runner import ROLLOUT_KIND
from bot.flows.update.pipeline import GUARDED_KINDS
from bot.jobs.staging import FOLDER_PREFIX, remove, staging_parent
from bot.remote.fleet import Fleet
from bot.remote.place import Place
from store import Job, Store, utcnow

log = logging.getLogger(__name__)

ORPHAN_GRACE = 5.0
ORPHAN_POLL = 0.1
GUARD_AFTER_RESTART = (
    "If it had activated, its rollback guard switches the machine back to the generation "
    "before by itself: nothing confirmed the new one."
)


@dataclass(frozen=True)
class Interrupted:
    """The jobs a previous process left running, now ended, and the processes it left."""

    jobs: list[Job]
    stopped: list[str]


class Recovery:
    """The start's clean-up and what it tells: built once, run by the bot's start."""

    def __init__(self, basics: Basics) -> None:
        self.current, self.fleet = basics.current, basics.fleet
        self.store, self.chat = basics.store, basics.chat
        self.state_dir = basics.settings.state_dir
        self.probes_enabled = basics.probes_enabled

    async def end_interrupted_jobs(self) -> Interrupted:
        """Jobs a previous process left running end as ``interrupted``; what it left
        behind (stand-ins still running, staging folders) is cleared first. Done before
        the first update is read, so no new job can start before."""
        stopped = await clear_crash_leftovers(self.state_dir)
        return Interrupted(await self.store.interrupt_active_jobs(), stopped)

    async def tell(self, interrupted: Interrupted) -> None:
        """What runs beside the chat once it answers: it waits on machines and sops."""
        await self.tell_interrupted_jobs(interrupted)
        await self.tell_key_contradictions()

    async def tell_key_contradictions(self) -> None:
        """Keys whose sources disagree are never replaced silently: admins hear of all of
        them in one message at start (``deploybot check`` lists them too)."""
        if not self.probes_enabled:
            return
        found = await contradictions(self.fleet, self.current.inventory)
        if not found:
            return
        lines = [
            f"🚨 Host keys that contradict each other ({len(found)}): these keys are not trusted,"
        ]
        lines.append("so the machines are not probed as healthy and get no passphrase until fixed.")
        lines += [f"• {name}: {conflict}" for name, conflict in found]
        lines.append("Correct the inventory or the sops file; deploybot check shows the same.")
        text = "\n".join(lines)
        for admin in sorted(self.current.admins):
            await self.chat.post(admin, text)

    async def tell_interrupted_jobs(self, interrupted: Interrupted) -> None:
        """The chats of interrupted jobs are told; each machine concerned is looked at
        again, so the message says where it stands. Nothing is started again."""
        jobs, stopped = interrupted.jobs, interrupted.stopped
        names = sorted({job.machine for job in jobs})
        inventory = self.current.inventory
        machines = [m for m in (inventory.get(n) for n in names) if m is not None]
        looks: dict[str, str] = {}
        if self.probes_enabled and machines:
            found = await asyncio.gather(
                *(look_after_interruption(self.fleet, self.store, m) for m in machines),
                return_exceptions=True,
            )
            for machine, result in zip(machines, found, strict=True):
                if isinstance(result, BaseException):
                    log.warning("could not look at %s after a restart: %r", machine.name, result)
                else:
                    looks[machine.name] = result
        for job in jobs:
            log.warning(
                "job %s (%s %s) was interrupted by a restart", job.id, job.kind, job.machine
            )
            if job.chat_id is None:
                continue
            if job.kind == ROLLOUT_KIND:
                await self._tell_rollout(job, jobs)
                continue
            now = looks.get(job.machine, f"check it with /status {job.machine} before you retry")
            extra = f"\nI stopped {len(stopped)} processes it had left running." if stopped else ""
            if job.kind in GUARDED_KINDS:
                extra += f"\n{GUARD_AFTER_RESTART}"
            await self.chat.post(
                job.chat_id,
                f"⏹ Job {job.id} ({job.kind} {job.machine}) was interrupted: the bot restarted "
                f"while it ran. Nothing was started again.\nNow: {now}.{extra}",
            )

    async def _tell_rollout(self, job: Job, jobs: list[Job]) -> None:
        assert job.chat_id is not None
        # Its machines' jobs were created just before it, by the same person, without a
        # chat (the rollout reports for them); those still queued never started.
        queued = [
            j.machine
            for j in jobs
            if j.chat_id is None
            and j.user_id == job.user_id
            and j.kind in GUARDED_KINDS
            and not j.started_at
            and j.id < job.id
        ]
        stood = await where_it_stood(self.store, job, queued)
        await self.chat.post(
            job.chat_id,
            f"⏹ Rollout {job.id} ({job.machine}) was interrupted: the bot restarted while "
            f"it ran. No machine was started again.\n{stood}"[:4000],
        )


async def clear_crash_leftovers(state_dir: Path) -> list[str]:
    """At start, undo what a killed bot left behind: installs still running, staging folders.

    A nixos-anywhere started by a previous process runs in its own session and outlives a
    SIGKILL of the bot; nobody reads its output or can confirm anything it does, so it is
    stopped, as a clean shutdown would have. The staging folders hold hosts' private keys.
    Returns one line per process stopped.
    """
    parent = staging_parent(state_dir)
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
            await asyncio.to_thread(remove, leftover)
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
            if path.name.startswith(FOLDER_PREFIX) and ours in (path.parent, path.parent.resolve()):
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
