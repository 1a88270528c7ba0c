"""What an update or a rollback will change, read from the machine before anyone confirms.

The person confirming sees the system the machine runs now and its generation, the system
it will run, and whether the kernel, initrd or kernel modules differ from what it booted:
those only take effect at the next boot (``docs/updates.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.durations import format_duration
from bot.flows.update import guard
from bot.flows.update.guard import Links
from bot.remote.health import Health
from bot.remote.shell import RemoteShell


class PlanError(Exception):
    """The machine's profile cannot be read or makes no sense; the message says why."""


@dataclass(frozen=True)
class Plan:
    """An activation to come: from ``current`` (generation ``generation``) to ``new``."""

    machine: str
    current: str
    generation: int
    new: str
    booted: Links
    coming: Links
    to_generation: int | None = None  # a rollback's target; an update makes a new one
    health: Health | None = None  # read before the change: its problems are not new ones

    @property
    def reboot_parts(self) -> list[str]:
        return self.coming.changed(self.booted)

    @property
    def unchanged(self) -> bool:
        return self.current == self.new

    def describe(self, *, rollback_timeout: float, rollback: bool = False) -> str:
        parts = self.reboot_parts
        reboot = (
            f"{', '.join(parts)} change: a reboot is needed to use them"
            if parts
            else "same kernel, initrd and modules: no reboot needed"
        )
        to = f"generation {self.to_generation}" if self.to_generation else "a new generation"
        verb = "Roll back" if rollback else "Update"
        return (
            f"{verb} {self.machine}? Its disks are not touched.\n"
            f"Now: generation {self.generation}, {self.current}\n"
            f"Then: {to}, {self.new}\n"
            f"{reboot}\n"
            f"Guard: unless I can log in again and the health checks pass within "
            f"{format_duration(rollback_timeout)}, the machine switches back to generation "
            f"{self.generation} by itself."
        )


async def read_plan(
    shell: RemoteShell,
    machine: str,
    new: str,
    *,
    timeout: float,
    to_generation: int | None = None,
) -> Plan:
    """Read the machine's profile and the links of the booted and the coming system."""
    state = await guard.read_state(shell, timeout=timeout, systems=("/run/booted-system", new))
    if state.armed:
        raise PlanError(
            f"a rollback guard is still armed on {machine} ({state.armed[0]}): wait for it "
            "to fire, then try again. Nothing was changed"
        )
    if state.current is None:
        raise PlanError(
            f"{machine} lists no current generation of {guard.PROFILE}: is it a NixOS system?"
        )
    if not state.running:
        raise PlanError(f"{machine} has no /run/current-system")
    booted, coming = state.links
    if not coming.kernel:
        raise PlanError(f"{new} on {machine} has no kernel link: it is not a NixOS system")
    return Plan(
        machine=machine,
        current=state.running,
        generation=state.current,
        new=new,
        booted=booted,
        coming=coming,
        to_generation=to_generation,
    )
