"""What the unlocker remembers between sessions, per machine."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.config.inventory import UnlockMode
from store.remembered import SystemdTries


@dataclass
class Memory:
    """Cooldowns, the flavour that worked, and systemd tries per boot."""

    # systemd initrd: tries used per (machine, boot id, query message). systemd-cryptsetup
    # allows 3 per boot (docs/initrd.md), so the count restarts only with a new boot id;
    # it is kept in the store, since a restart of the bot is no new boot of the machine.
    tries: SystemdTries
    cooldown_until: dict[str, float] = field(default_factory=dict)
    # ``unlock = auto``: which way the machine's initrd took a passphrase last time.
    flavour: dict[str, UnlockMode] = field(default_factory=dict)
