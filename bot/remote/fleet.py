"""The machines of the inventory as Targets, each judged by the keys pinned for it.

Pins are resolved from every source (``bot.remote.pins``): what the bot recorded, the
inventory, the sops-held host key, the initrd key read from the booted system, /adopt. A
new pin is written to the store with its source, where the next Target reads it.

The Fleet keeps one Target per machine, so the login it keeps open to the machine's system
(``bot.remote.target``) lasts from one probe to the next; its pins are read again from the
store on every ``target()``. Targets of machines that left the inventory are closed and
forgotten (``retain``), and every one is closed when the bot stops (``close``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from bot.config.inventory import Machine
from bot.remote.health import DEFAULT_LIMITS, CheckLimits
from bot.remote.pins import RECORDED, SopsHostKeys, booted_source, resolve
from bot.remote.place import Pins
from bot.remote.target import KeyReadFailed, Reach, Target
from store import MachineState, Store

log = logging.getLogger(__name__)
#: After a failed read of the initrd key from the booted system, wait this long to retry.
INITRD_READ_RETRY = 600.0


class Fleet:
    """One Target per machine, judged by its current pins."""

    def __init__(
        self,
        store: Store,
        reach: Reach,
        sops_keys: SopsHostKeys | None = None,
        *,
        limits: CheckLimits = DEFAULT_LIMITS,
    ) -> None:
        self.store = store
        self.reach = reach
        self.limits = limits
        self.sops_keys = sops_keys or SopsHostKeys(None)
        self._read_failed_at: dict[str, float] = {}
        self._targets: dict[str, Target] = {}

    async def target(self, machine: Machine, known: MachineState | None = None) -> Target:
        """The machine's Target with the pins the store holds now (``known``, when the
        caller has just read the machine's row)."""
        pins = await self.pins(machine, known)
        target = self._targets.get(machine.name)
        if target is not None and target.machine != machine:  # its inventory entry changed
            target.close()
            target = None
        if target is None:
            target = Target(machine, pins, self.reach, keep=True, limits=self.limits)
            self._targets[machine.name] = target
        else:
            target.repin(pins)
        return target

    def unpinned(self, machine: Machine) -> Target:
        """A Target for looks that need no pins (its ports): nothing read, nothing kept."""
        return Target(machine, Pins(), self.reach, limits=self.limits)

    def retain(self, names: Iterable[str]) -> None:
        """Close and forget the Targets of machines not in ``names`` (they left the
        inventory)."""
        keep = set(names)
        for name in [n for n in self._targets if n not in keep]:
            self._targets.pop(name).close()

    def close(self) -> None:
        """Close every kept login (the bot stops)."""
        for target in self._targets.values():
            target.close()
        self._targets.clear()

    @property
    def open_logins(self) -> int:
        return sum(1 for t in self._targets.values() if t.connected)

    async def pins(self, machine: Machine, known: MachineState | None = None) -> Pins:
        if known is None:
            known = await self.store.machine(machine.name)
        sops_key, _ = await self.sops_keys.public_key(machine)
        return resolve(machine, known, sops_key)

    async def pin(
        self,
        machine: Machine,
        *,
        system: str | None = None,
        initrd: str | None = None,
        installer: str | None = None,
        source: str = RECORDED,
    ) -> None:
        """Record new pins (only those given), each with ``source``."""
        fields: dict[str, str] = {}
        if system is not None:
            fields.update(host_key=system, host_key_source=source if system else "")
        if initrd is not None:
            fields.update(initrd_host_key=initrd, initrd_host_key_source=source if initrd else "")
        if installer is not None:
            fields["installer_host_key"] = installer
        if fields:
            await self.store.update_machine(machine.name, **fields)

    async def learn_initrd_key(self, machine: Machine, *, force: bool = False) -> str:
        """Read and record the initrd key from the booted system when none is pinned.

        Returns the key recorded ("" when none was needed or it could not be read; a failed
        read is retried after ``INITRD_READ_RETRY`` unless ``force``). KeyReadFailed only
        with ``force``, so a person who asked hears why.
        """
        target = await self.target(machine)
        pins = target.pins
        if not machine.luks or pins.initrd or pins.conflicts or not pins.system:
            return ""
        last = self._read_failed_at.get(machine.name)
        if not force and last is not None and time.monotonic() - last < INITRD_READ_RETRY:
            return ""
        try:
            key = await target.read_initrd_key()
        except KeyReadFailed as exc:
            self._read_failed_at[machine.name] = time.monotonic()
            log.warning("%s: initrd key not read from the booted system: %s", machine.name, exc)
            if force:
                raise
            return ""
        self._read_failed_at.pop(machine.name, None)
        await self.pin(machine, initrd=key, source=booted_source(machine.initrd_host_key_file))
        return key
