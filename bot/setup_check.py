"""``deploybot check``: settings, inventory, secrets and the SSH key, as a table.

It decrypts every referenced secret to prove access, then drops the value at once: the
table says ``ok`` or what is wrong, never what a secret is.
"""

from __future__ import annotations

import asyncio
import os
import shlex
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
from bot.remote.nix import (
    GLOBAL_FLAGS,
    OLDEST_NIX,
    TOO_OLD,
    NixError,
    child_env,
    run_nix,
    version,
)
from bot.remote.pins import SopsHostKeys, describe, resolve
from store import MachineState, Store

NIX_VERSION_TIMEOUT = 30.0


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
    rows.append(await _nix(settings.nix))
    rows.append(_state_dir(settings.state_dir))
    if inventory is not None:
        rows += await _secrets(settings, inventory)
        rows += await _keys(settings, inventory)
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


async def _nix(nix: tuple[str, ...]) -> Row:
    """The Nix that builds installs and updates: found, and new enough for the bot's flags.
    A warning, not a failure: unlocking and watching need no Nix."""
    item = "DEPLOYBOT_NIX"
    if not nix or shutil.which(nix[0]) is None:
        shown = nix[0] if nix else "(empty)"
        return Row(item, "warn", f"{shown}: not found on PATH: installs and updates cannot build")
    said = await _version_of(nix)
    found = version(said)
    if found is None:
        return Row(item, "warn", f"{shlex.join(nix)} --version said {said[:100]!r}")
    if found < OLDEST_NIX:
        return Row(item, "warn", f"Nix {found[0]}.{found[1]}: {TOO_OLD}: install a newer one")
    return Row(item, "ok", said.splitlines()[-1][:100])


async def _version_of(nix: tuple[str, ...]) -> str:
    """What ``nix --version`` printed, or why it printed nothing (through the one nix runner:
    bounded lines, its own process group, stopped after ``NIX_VERSION_TIMEOUT``)."""
    argv = [*nix, *GLOBAL_FLAGS, "--version"]
    try:
        done = await run_nix(
            argv,
            what="nix --version",
            env=child_env(),
            on_line=_ignore,
            timeout=NIX_VERSION_TIMEOUT,
        )
    except NixError as exc:
        return str(exc)
    return "\n".join(done.lines).strip()


def _ignore(line: str) -> None:
    del line


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


async def _keys(settings: Settings, inventory: Inventory) -> list[Row]:
    """Per machine, which keys are pinned and from where; a contradiction is a failure."""
    recorded = await _recorded(settings.db)
    sops_keys = SopsHostKeys(settings.sops_reader())
    rows: list[Row] = []
    for machine in inventory:
        item = f"{machine.name}: keys"
        sops_key, problem = await sops_keys.public_key(machine)
        if problem:
            rows.append(Row(item, "FAIL", f"no key from sops: {problem}"))
        pins = resolve(machine, recorded.get(machine.name) or MachineState(machine.name), sops_key)
        for line in describe(machine, pins):
            if line.startswith("⚠️"):
                rows.append(Row(item, "FAIL", line.removeprefix("⚠️ ")))
            else:
                rows.append(Row(item, "ok" if pins.system else "warn", line))
    return rows


async def _recorded(path: Path) -> dict[str, MachineState]:
    """The keys the bot recorded, if it ever ran here (no database is made for a check)."""
    if not await asyncio.to_thread(path.exists):
        return {}
    store = await Store.open(path)
    try:
        return await store.machines()
    finally:
        await store.close()


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
