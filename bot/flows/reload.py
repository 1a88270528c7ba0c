"""Reading the settings and the inventory again while the bot runs (SIGHUP, ``/reload``).

A reload is all or nothing. The new inventory is parsed in full first; a wrong one is
refused with its problems (machine and key), the old one stays in force and the admins are
told. A good one is put in force in one step (:class:`~bot.config.current.Current`), the
schedules are made to match it, and running jobs go on untouched: a job holds the machine
it started with until it ends.

Of the settings only the admins change on a reload. The others are held by what was built
at start (the Telegram connection, the database, the job logs' folder, the SSH key every
connection uses, the deployer's flake and commands, the webhook server): a change there is
reported as needing a restart and the old value stays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.config.inventory import Inventory, InventoryError, load_inventory
from bot.config.settings import Settings, SettingsError
from bot.flows.basics import Basics
from bot.flows.watch.schedule import Schedules
from bot.flows.watch.watcher import Watcher

log = logging.getLogger(__name__)

#: The settings a reload puts in force; every other one needs a restart.
RELOADABLE = frozenset({"admins"})
#: How the reports name a setting: its variable in the README's table.
VARIABLES = {
    "token": "TELEGRAM_BOT_TOKEN",
    "api_url": "TELEGRAM_API_URL",
    "admins": "DEPLOYBOT_ADMINS",
    "inventory": "DEPLOYBOT_INVENTORY",
    "flake": "DEPLOYBOT_FLAKE",
    "db": "DEPLOYBOT_DB",
    "state_dir": "DEPLOYBOT_STATE_DIR",
    "ssh_key": "DEPLOYBOT_SSH_KEY",
    "nixos_anywhere": "DEPLOYBOT_NIXOS_ANYWHERE",
    "sops": "DEPLOYBOT_SOPS",
    "sops_env": "SOPS_AGE_*",
    "webhook_url": "DEPLOYBOT_WEBHOOK_URL",
    "webhook_listen": "DEPLOYBOT_WEBHOOK_LISTEN",
    "keep_days": "DEPLOYBOT_KEEP_DAYS",
    "report": "DEPLOYBOT_REPORT",
}
MAX_PROBLEMS = 20  # keeps the admins' message far below Telegram's length limit


@dataclass(frozen=True)
class Who:
    """Who asked for the reload, for the audit: a person, or ``signal`` (SIGHUP)."""

    user_id: int | None
    username: str

    @property
    def label(self) -> str:
        if self.user_id is None:
            return self.username
        return f"@{self.username}" if self.username else str(self.user_id)


SIGNAL = Who(None, "signal")


@dataclass(frozen=True)
class ReloadReport:
    """What a reload did, in lines a person reads."""

    ok: bool
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def restart_needed(before: Settings, after: Settings) -> list[str]:
    """The variables that changed but only take effect after a restart (values not shown)."""
    changed = []
    for f in dataclasses.fields(Settings):
        if f.name in RELOADABLE:
            continue
        if getattr(before, f.name) != getattr(after, f.name):
            changed.append(VARIABLES.get(f.name, f.name))
    return changed


def inventory_changes(before: Inventory, after: Inventory) -> list[str]:
    """Machines added, removed and changed, as short lines."""
    old, new = before.machines, after.machines
    added = [n for n in new if n not in old]
    removed = [n for n in old if n not in new]
    changed = [n for n in new if n in old and new[n] != old[n]]
    lines = []
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            lines.append(f"machines {label}: {', '.join(names)}")
    return lines


class Reloader:
    """Reads settings and inventory again and puts what may change in force, or refuses."""

    def __init__(
        self,
        basics: Basics,
        *,
        read_settings: Callable[[], Settings] | None,
        schedules: Schedules | None,
        watcher: Watcher,
    ) -> None:
        self.current, self.fleet, self.settings = basics.current, basics.fleet, basics.settings
        self.store, self.chat = basics.store, basics.chat
        self.read_settings = read_settings
        self.schedules = schedules
        self.watcher = watcher
        self._lock = asyncio.Lock()

    async def reload(self, who: Who) -> ReloadReport:
        """One reload at a time; audited with who asked and what came of it."""
        async with self._lock:
            report = await self._reload()
        await self.store.audit(
            user_id=who.user_id,
            username=who.username,
            action="reload",
            decision="allowed" if report.ok else "refused",
            detail="; ".join(report.lines[1:]) or report.lines[0],
        )
        log.info("reload by %s: %s", who.label, report.text.replace("\n", "; "))
        # The person who asked reads the reply; the other admins learn of a refusal, and
        # of every reload by signal, whose sender reads no chat.
        if not report.ok:
            await self._tell_admins(f"⚠️ Reload by {who.label} refused.\n{report.text}", who)
        elif who.user_id is None:
            await self._tell_admins(f"🔄 Reload by {who.label}.\n{report.text}", who)
        return report

    async def _reload(self) -> ReloadReport:
        # None in the console, whose settings are its own (the person at the terminal is admin).
        if self.read_settings is None:
            return ReloadReport(False, ("Nothing to reload here: restart to read it again.",))
        try:
            settings = await asyncio.to_thread(self.read_settings)
        except SettingsError as exc:
            return ReloadReport(
                False, ("Reload refused: the settings are wrong; nothing changed.", str(exc))
            )
        path = self.current.inventory.path
        try:
            inventory = await asyncio.to_thread(load_inventory, path)
        except InventoryError as exc:
            shown = exc.problems[:MAX_PROBLEMS]
            more = len(exc.problems) - len(shown)
            lines = [f"Reload refused: {path} is wrong; the inventory in force stays.", *shown]
            if more:
                lines.append(f"… and {more} more (deploybot check lists them all)")
            return ReloadReport(False, tuple(lines))
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            return ReloadReport(
                False, (f"Reload refused: cannot read {path} ({why}); nothing changed.",)
            )
        before = self.current.replace(inventory, settings.admins)
        lines = inventory_changes(before.inventory, inventory)
        if settings.admins != before.admins:
            lines.append(f"admins: {', '.join(str(a) for a in sorted(settings.admins)) or 'none'}")
        removed = [n for n in before.inventory.machines if n not in inventory.machines]
        self.watcher.forget(removed)
        # Kept logins of machines that left are closed; a changed entry gets a new Target.
        self.fleet.retain(inventory.machines)
        if self.schedules is not None:
            self.schedules.sync()
        restart = restart_needed(self.settings, settings)
        if restart:
            lines.append(f"needs a restart (the old value stays until then): {', '.join(restart)}")
        head = f"Reloaded {path}: {len(inventory)} machines" + ("." if lines else ", no change.")
        return ReloadReport(True, (head, *lines))

    async def _tell_admins(self, text: str, who: Who) -> None:
        for admin in sorted(a for a in self.current.admins if a != who.user_id):
            await self.chat.post(admin, text)
