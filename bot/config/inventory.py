"""The inventory: ``machines.toml``, validated strictly at start.

A wrong inventory is refused as a whole with messages that name the machine and the key,
because a typo in ``luks`` or ``operators`` silently ignored would be worse than a bot that
does not start.

It is one module on purpose: every key and its rule read as one table, so a new key
is added in one place.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bot.core.cron import cron_trigger
from bot.core.durations import parse_duration
from bot.core.keys import parse_public_key
from bot.core.text import has_control, printable

UnlockMode = Literal["auto", "askpass", "systemd"]
MACHINE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: A tag names a group of machines (``tags = ["web", "eu"]``; ``/report tag:web``).
TAG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
_ATTR = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.'-]{0,127}$")
_SECRET_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SIZE = re.compile(r"^\d+[KMGT]?$")
_PERSIST = re.compile(r"/|(/[A-Za-z0-9._+-]+)+/?")
_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/=]+( .*)?$")
_KEY_FILE = re.compile(r"(/[A-Za-z0-9._+-]+)+")


class InventoryError(ValueError):
    """The inventory is refused; ``problems`` lists every finding, one line each."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        # Keys and values come from the file: shown printable only (no escapes, no bidi).
        self.problems = [printable(p, 300) for p in problems]
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{path}: the inventory is refused:\n{lines}")


@dataclass(frozen=True)
class Machine:
    """One machine of the inventory, typed and defaulted as machines.example.toml documents."""

    name: str
    host: str
    flake_attr: str
    ssh_user: str = "root"
    ssh_port: int = 22
    luks: bool = False
    initrd_port: int = 2222
    unlock: UnlockMode = "auto"
    initrd_host_key: str = ""
    host_key: str = ""
    initrd_host_key_file: str = "/boot/ssh_host_ed25519_key"
    secrets_file: Path | None = None
    host_key_secret: str = ""
    luks_passphrase_secret: str = ""
    auto_unlock: bool = False
    persist_dir: str = "/nix/persist/system"
    rw_store_size: str = "512M"
    operators: frozenset[int] = frozenset()
    probe_interval: float = 60.0
    boot_timeout: float = 900.0
    unlock_timeout: float = 1800.0
    rollback_timeout: float = 90.0
    reboot_check: str = ""
    checks: tuple[str, ...] = ()
    erase_approval: bool = False
    tags: tuple[str, ...] = ()
    #: A rollout updates its canaries first, alone, before any wave (docs/updates.md).
    canary: bool = False


@dataclass(frozen=True)
class Inventory:
    """All machines, by name, in file order."""

    path: Path
    machines: Mapping[str, Machine]

    def __iter__(self) -> Iterator[Machine]:
        return iter(self.machines.values())

    def __len__(self) -> int:
        return len(self.machines)

    def get(self, name: str) -> Machine | None:
        return self.machines.get(name)

    def operated_by(self, user_id: int) -> list[Machine]:
        return [m for m in self if user_id in m.operators]

    def tagged(self, tag: str) -> list[Machine]:
        """The machines carrying ``tag``, in file order."""
        return [m for m in self if tag in m.tags]


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,),
    "flake_attr": (str,),
    "ssh_user": (str,),
    "ssh_port": (int,),
    "luks": (bool,),
    "initrd_port": (int,),
    "unlock": (str,),
    "initrd_host_key": (str,),
    "host_key": (str,),
    "initrd_host_key_file": (str,),
    "secrets_file": (str,),
    "host_key_secret": (str,),
    "luks_passphrase_secret": (str,),
    "auto_unlock": (bool,),
    "persist_dir": (str,),
    "rw_store_size": (str,),
    "operators": (list,),
    "probe_interval": (str,),
    "boot_timeout": (str,),
    "unlock_timeout": (str,),
    "rollback_timeout": (str,),
    "reboot_check": (str,),
    "checks": (list,),
    "erase_approval": (bool,),
    "tags": (list,),
    "canary": (bool,),
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}


def load_inventory(path: Path) -> Inventory:
    """Read and validate ``path``; raise InventoryError listing every problem found."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InventoryError(
            path, ["no such file (copy machines.example.toml to start one)"]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(path, [f"not valid TOML: {exc}"]) from None
    return parse_inventory(data, path)


def parse_inventory(data: Mapping[str, Any], path: Path) -> Inventory:
    """Validate already-parsed TOML data (``path`` anchors relative secrets files)."""
    problems: list[str] = []
    unknown_top = sorted(set(data) - {"machines"})
    if unknown_top:
        problems.append(f"unknown top-level key(s) {', '.join(unknown_top)} (only [machines.NAME])")
    table = data.get("machines", {})
    if not isinstance(table, Mapping):
        raise InventoryError(path, [*problems, "machines: expected tables [machines.NAME]"])
    machines: dict[str, Machine] = {}
    for name, entry in table.items():
        machine = _parse_machine(str(name), entry, path.parent, problems)
        if machine is not None:
            machines[machine.name] = machine
    seen: dict[tuple[str, int], str] = {}
    for machine in machines.values():
        # 127.1, 0x7f.1 and 127.0.0.1 are one address: compare what they stand for.
        address = numeric_address(machine.host) or machine.host.lower().rstrip(".")
        key = (address, machine.ssh_port)
        if key in seen:
            problems.append(
                f"{machine.name}: host {machine.host}:{machine.ssh_port} is also "
                f"machine {seen[key]} (each machine needs its own address)"
            )
        seen.setdefault(key, machine.name)
    if problems:
        raise InventoryError(path, problems)
    return Inventory(path=path, machines=machines)


def _parse_machine(name: str, entry: Any, base: Path, problems: list[str]) -> Machine | None:
    if not MACHINE_NAME.fullmatch(name):
        problems.append(
            f"{name[:40]!r}: machine names are lowercase letters, digits, '-' and '_' "
            "(at most 63, starting with a letter or digit)"
        )
        return None
    if not isinstance(entry, Mapping):
        problems.append(f"{name}: expected a table [machines.{name}]")
        return None
    before = len(problems)

    def bad(key: str, why: str) -> None:
        problems.append(f"{name}: {key}: {why}")

    for key in sorted(set(entry) - set(_FIELD_TYPES)):
        bad(key, f"unknown key (known: {', '.join(_FIELD_TYPES)})")
    for key, types in _FIELD_TYPES.items():
        value = entry.get(key)
        if value is None:
            continue
        # bool is an int subclass: `ssh_port = true` must not pass as 1.
        wrong = isinstance(value, bool) and bool not in types
        if wrong or not isinstance(value, types):
            bad(key, f"expected {_TYPE_NAMES[types[0]]}, got {type(value).__name__} {value!r}")
        elif isinstance(value, str) and has_control(value):
            bad(key, f"{value[:40]!r} contains control characters (a newline, NUL …)")
    if len(problems) > before:
        return None

    host: str = entry.get("host", "")
    if not host:
        bad("host", "missing (the machine's IP address or DNS name)")
    elif not _valid_host(host):
        bad("host", f"{host!r} is not an IP address or DNS name")
    attr = entry.get("flake_attr", name)
    if not _ATTR.fullmatch(attr):
        bad("flake_attr", f"{attr!r} is not a flake attribute name")
    user = entry.get("ssh_user", "root")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        bad("ssh_user", f"{user!r} is not a user name")
    for key in ("ssh_port", "initrd_port"):
        port = entry.get(key)
        if port is not None and not 1 <= port <= 65535:
            bad(key, f"{port} is not a TCP port (1-65535)")
    unlock = entry.get("unlock", "auto")
    if unlock not in ("auto", "askpass", "systemd"):
        bad("unlock", f"{unlock!r}: expected auto, askpass or systemd")
    for key in ("initrd_host_key", "host_key"):
        why = _public_key_problem(entry.get(key, ""))
        if why:
            bad(key, why)
    initrd_key = entry.get("initrd_host_key", "")
    initrd_file = entry.get("initrd_host_key_file", "/boot/ssh_host_ed25519_key")
    if initrd_file and (not _KEY_FILE.fullmatch(initrd_file) or ".." in initrd_file.split("/")):
        bad("initrd_host_key_file", f'{initrd_file!r}: expected an absolute path, or ""')
    for key in ("host_key_secret", "luks_passphrase_secret"):
        value = entry.get(key, "")
        if value and not _SECRET_KEY.fullmatch(value):
            bad(key, f"{value!r} is not a sops key name")
    secrets_file = entry.get("secrets_file")
    if (entry.get("host_key_secret") or entry.get("luks_passphrase_secret")) and not secrets_file:
        bad("secrets_file", "missing: host_key_secret/luks_passphrase_secret need a sops file")
    if entry.get("auto_unlock") and not entry.get("luks_passphrase_secret"):
        bad("auto_unlock", "needs luks_passphrase_secret (the passphrase to unlock with)")
    persist = entry.get("persist_dir", "/nix/persist/system")
    if (persist and not _PERSIST.fullmatch(persist)) or ".." in persist.split("/"):
        bad("persist_dir", f'{persist!r}: expected an absolute path such as /nix/persist, or ""')
    elif persist and _under_boot(persist):
        bad(
            "persist_dir",
            f"{persist!r} is on /boot, which is not encrypted: the host key "
            "would lie there in the clear",
        )
    size = entry.get("rw_store_size", "512M")
    if size and not _SIZE.fullmatch(size):
        bad("rw_store_size", f'{size!r}: expected a size such as 512M or 1G, or ""')
    operators = entry.get("operators", [])
    for op in operators:
        if isinstance(op, bool) or not isinstance(op, int) or op <= 0:
            bad("operators", f"{op!r} is not a Telegram user id (a positive integer)")
    durations: dict[str, float] = {}
    for key, default in (
        ("probe_interval", "60s"),
        ("boot_timeout", "15m"),
        ("unlock_timeout", "30m"),
        ("rollback_timeout", "90s"),
    ):
        try:
            durations[key] = parse_duration(entry.get(key, default))
        except ValueError as exc:
            bad(key, str(exc))
    if not 2 <= durations.get("rollback_timeout", 90.0) <= 3600:
        bad("rollback_timeout", "expected between 2s and 1h (the update's rollback guard)")
    cron = entry.get("reboot_check", "")
    if cron:
        try:
            cron_trigger(cron)
        except ValueError as exc:
            bad("reboot_check", f"{cron!r} is not a cron expression ({exc})")
    checks = entry.get("checks", [])
    for check in checks:
        why = check_problem(check)
        if why:
            bad("checks", why)
    tags = entry.get("tags", [])
    for tag in tags:
        if not isinstance(tag, str) or not TAG.fullmatch(tag):
            bad("tags", f"{str(tag)[:40]!r} is not a tag (lowercase letters, digits, '-' and '_')")
    if len(problems) > before:
        return None
    return Machine(
        name=name,
        host=host,
        flake_attr=attr,
        ssh_user=user,
        ssh_port=entry.get("ssh_port", 22),
        luks=entry.get("luks", False),
        initrd_port=entry.get("initrd_port", 2222),
        unlock=unlock,
        initrd_host_key=initrd_key,
        host_key=entry.get("host_key", ""),
        initrd_host_key_file=initrd_file,
        secrets_file=(base / secrets_file) if secrets_file else None,
        host_key_secret=entry.get("host_key_secret", ""),
        luks_passphrase_secret=entry.get("luks_passphrase_secret", ""),
        auto_unlock=entry.get("auto_unlock", False),
        persist_dir=persist,
        rw_store_size=size,
        operators=frozenset(operators),
        probe_interval=durations["probe_interval"],
        boot_timeout=durations["boot_timeout"],
        unlock_timeout=durations["unlock_timeout"],
        rollback_timeout=durations["rollback_timeout"],
        reboot_check=cron,
        checks=tuple(checks),
        erase_approval=entry.get("erase_approval", False),
        tags=tuple(dict.fromkeys(tags)),
        canary=entry.get("canary", False),
    )


def _under_boot(path: str) -> bool:
    """Whether ``path`` (``/./boot``, ``//boot/x`` …) names /boot or a folder in it."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return bool(parts) and parts[0] == "boot"


def numeric_address(host: str) -> str | None:
    """The address a numeric host stands for (``127.1``, ``0x7f.1``, ``::ffff:127.0.0.1``
    → ``127.0.0.1``), or None for a DNS name. No lookup: resolving names happens at the
    deploy preflight (``bot.remote.address``)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            packed = socket.inet_aton(host)  # the forms inet_aton(3) accepts: 127.1, 0x7f.1
        except OSError:
            return None
        if not re.fullmatch(r"[0-9a-fA-FxX.]+", host):
            return None
        address = ipaddress.IPv4Address(packed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _public_key_problem(line: str) -> str | None:
    """Why a ``host_key``/``initrd_host_key`` value is not a usable public key line."""
    example = "expected an OpenSSH public key line, e.g. 'ssh-ed25519 AAAA…'"
    if not line:
        return None
    if not _PUBLIC_KEY.fullmatch(line):
        return example
    try:
        parse_public_key(line)
    except ValueError as exc:
        return f"{example} ({exc})"
    return None


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host)) and not host.startswith("-")
    return True


def check_problem(check: Any) -> str | None:
    """Why a ``checks`` entry is invalid, or None: ``tcp:PORT`` or an http(s) URL."""
    if not isinstance(check, str):
        return f"{check!r}: expected a string such as 'tcp:443' or 'http://127.0.0.1:8080/health'"
    if check.startswith("tcp:"):
        port = check[4:]
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            return f"{check!r}: expected tcp:PORT with PORT 1-65535"
        return None
    if check.startswith(("http://", "https://")):
        parts = urlsplit(check)
        if not parts.hostname or any(c.isspace() or ord(c) < 32 for c in check):
            return f"{check!r}: not a usable URL"
        return None
    return f"{check!r}: expected 'tcp:PORT' or an http:// or https:// URL"
