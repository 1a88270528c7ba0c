"""``deploybot check``: settings, inventory, secrets and the SSH key, as a table.

It decrypts every referenced secret to prove access, then drops the value at once: the
table says ``ok`` or what is wrong, never what a secret is.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bot.config.inventory import Inventory, InventoryError, load_inventory
from bot.config.settings import Settings
from bot.core.keys import public_from_private
from bot.core.secret import Secret
from bot.core.text import printable


@dataclass(frozen=True)
class Row:
    item: str
    level: str  # ok | warn | FAIL
    detail: str


async def collect(settings: Settings) -> list[Row]:
    rows = [_token(settings), _admins(settings)]
    inventory: Inventory | None = None
    try:
        inventory = load_inventory(settings.inventory)
        rows.append(Row("inventory", "ok", f"{settings.inventory}: {len(inventory)} machines"))
    except InventoryError as exc:
        rows += [Row("inventory", "FAIL", problem) for problem in exc.problems]
    rows.append(_ssh_key(settings.ssh_key))
    rows.append(_executable("nixos-anywhere", settings.nixos_anywhere[0], required=False))
    rows.append(_executable("sops", settings.sops, required=True))
    rows.append(_state_dir(settings.state_dir))
    if inventory is not None:
        rows += await _secrets(settings, inventory)
    return rows


def _token(settings: Settings) -> Row:
    if settings.token is None:
        return Row("TELEGRAM_BOT_TOKEN", "FAIL", "not set: get one from @BotFather (/newbot)")
    if ":" not in settings.token:
        return Row("TELEGRAM_BOT_TOKEN", "FAIL", "does not look like a bot token (123456:ABC…)")
    return Row("TELEGRAM_BOT_TOKEN", "ok", "set")


def _admins(settings: Settings) -> Row:
    if not settings.admins:
        return Row("DEPLOYBOT_ADMINS", "warn", "none: only machines' operators can use the bot")
    return Row("DEPLOYBOT_ADMINS", "ok", ", ".join(str(a) for a in sorted(settings.admins)))


def _ssh_key(path: Path) -> Row:
    item = "DEPLOYBOT_SSH_KEY"
    try:
        info = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        return Row(item, "FAIL", f"{path}: {exc.strerror}")
    try:
        public = public_from_private(Secret(data))
    except ValueError:
        return Row(item, "FAIL", f"{path}: not an unencrypted OpenSSH private key")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Row(item, "FAIL", f"{path}: readable by others (chmod 600 {path})")
    return Row(item, "ok", f"{path} ({public.split()[0]})")


def _executable(item: str, program: str, *, required: bool) -> Row:
    found = shutil.which(program)
    if found:
        return Row(item, "ok", found)
    return Row(item, "FAIL" if required else "warn", f"{program}: not found on PATH")


def _state_dir(path: Path) -> Row:
    probe = path if path.exists() else path.parent if str(path.parent) else Path()
    if os.access(probe, os.W_OK):
        return Row("DEPLOYBOT_STATE_DIR", "ok", str(path))
    return Row("DEPLOYBOT_STATE_DIR", "FAIL", f"{path}: not writable")


async def _secrets(settings: Settings, inventory: Inventory) -> list[Row]:
    wanted: dict[Path, list[tuple[str, str]]] = defaultdict(list)
    for machine in inventory:
        if machine.secrets_file is None:
            continue
        for key in (machine.host_key_secret, machine.luks_passphrase_secret):
            if key:
                wanted[machine.secrets_file].append((machine.name, key))
    rows: list[Row] = []
    sops = settings.sops_reader()
    for file, uses in wanted.items():
        keys = sorted({key for _, key in uses})
        problems = await sops.problems(file, keys)
        failed = {p.key: p.message for p in problems}
        for name, key in uses:
            if key in failed:
                rows.append(Row(f"{name}: {key}", "FAIL", failed[key]))
            elif None in failed:
                rows.append(Row(f"{name}: {key}", "FAIL", failed[None]))
            else:
                rows.append(Row(f"{name}: {key}", "ok", f"decrypts from {file}"))
    return rows


def render(rows: list[Row]) -> str:
    """The table; items and details printable only (an inventory key or a sops error must
    not clear the operator's terminal or print a fake "all good")."""
    shown = [(r.level, printable(r.item, 120), printable(r.detail, 500)) for r in rows]
    width = max(len(item) for _, item, _ in shown)
    return "\n".join(f"{level:<4}  {item:<{width}}  {detail}" for level, item, detail in shown)


async def run_check(settings: Settings, out: TextIO = sys.stdout) -> int:
    rows = await collect(settings)
    out.write(render(rows) + "\n")
    failed = sum(r.level == "FAIL" for r in rows)
    out.write(f"{failed} problem(s)\n" if failed else "all good\n")
    return 1 if failed else 0
