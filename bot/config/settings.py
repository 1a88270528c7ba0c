"""Settings from the environment, or from a ``deploy.env`` file beside the bot.

Real environment variables win over the file, so a secret can live in a service manager's
environment while the rest sits in the file.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.sops import KEY_VARIABLES, SopsReader, default_executable

DEFAULT_API_URL = "https://api.telegram.org/bot"
DEFAULT_NIXOS_ANYWHERE = "nix run github:nix-community/nixos-anywhere --"


class SettingsError(ValueError):
    """A setting is malformed; the message names the variable and what to write instead."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the README's table, parsed and typed."""

    token: str | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    admins: frozenset[int] = frozenset()
    inventory: Path = Path("machines.toml")
    flake: str = "."
    db: Path = Path("deploybot.sqlite3")
    state_dir: Path = Path("state")
    ssh_key: Path = Path("~/.ssh/id_ed25519")
    nixos_anywhere: tuple[str, ...] = ("nix", "run", "github:nix-community/nixos-anywhere", "--")
    nix: tuple[str, ...] = ("nix",)  # DEPLOYBOT_NIX: builds and copies an update's system
    sops: str = "sops"
    sops_env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def sops_reader(self) -> SopsReader:
        """sops as configured: the settings' key variables over the bot's environment."""
        return SopsReader(self.sops, {**os.environ, **self.sops_env})


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``KEY=value`` lines (``#`` comments, optional ``export``, shell-style quotes)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SettingsError(f"{path}:{number}: expected KEY=value, got {raw.strip()[:40]!r}")
        try:
            parts = shlex.split(value, comments=True)
        except ValueError as exc:
            raise SettingsError(f"{path}:{number}: {key}: {exc}") from None
        values[key] = " ".join(parts)
    return values


def _parse_admins(text: str) -> frozenset[int]:
    admins: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit():
            raise SettingsError(
                f"DEPLOYBOT_ADMINS: {part!r} is not a Telegram user id "
                "(numbers separated by commas; /whoami tells yours)"
            )
        admins.add(int(part))
    return frozenset(admins)


def _default_sops() -> str:
    try:
        return default_executable()
    except (ImportError, AttributeError, OSError):
        return "sops"


def load_settings(
    env_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Merge ``env_file`` (default ``./deploy.env`` when present) under ``environ``."""
    environ = os.environ if environ is None else environ
    merged: dict[str, str] = {}
    if env_file is not None:
        if not env_file.is_file():
            raise SettingsError(f"--env {env_file}: no such file")
        merged.update(read_env_file(env_file))
    elif Path("deploy.env").is_file():
        merged.update(read_env_file(Path("deploy.env")))
    merged.update({k: v for k, v in environ.items() if k.startswith(("TELEGRAM_", "DEPLOYBOT_"))})
    merged.update({k: v for k, v in environ.items() if k in KEY_VARIABLES})

    def get(name: str, default: str) -> str:
        value = merged.get(name, "").strip()
        return value or default

    prefix_text = get("DEPLOYBOT_NIXOS_ANYWHERE", DEFAULT_NIXOS_ANYWHERE)
    try:
        prefix = tuple(shlex.split(prefix_text))
    except ValueError as exc:
        raise SettingsError(f"DEPLOYBOT_NIXOS_ANYWHERE: {exc}") from None
    if not prefix:
        raise SettingsError("DEPLOYBOT_NIXOS_ANYWHERE is empty")
    try:
        nix = tuple(shlex.split(get("DEPLOYBOT_NIX", "nix")))
    except ValueError as exc:
        raise SettingsError(f"DEPLOYBOT_NIX: {exc}") from None
    api_url = get("TELEGRAM_API_URL", DEFAULT_API_URL)
    if not api_url.startswith(("https://", "http://")):
        raise SettingsError(
            f"TELEGRAM_API_URL must start with https:// or http://, not {api_url!r}"
        )
    sops_env = {k: merged[k] for k in KEY_VARIABLES if merged.get(k)}
    return Settings(
        token=merged.get("TELEGRAM_BOT_TOKEN", "").strip() or None,
        api_url=api_url,
        admins=_parse_admins(merged.get("DEPLOYBOT_ADMINS", "")),
        inventory=Path(get("DEPLOYBOT_INVENTORY", "machines.toml")).expanduser(),
        flake=get("DEPLOYBOT_FLAKE", "."),
        db=Path(get("DEPLOYBOT_DB", "deploybot.sqlite3")).expanduser(),
        state_dir=Path(get("DEPLOYBOT_STATE_DIR", "state")).expanduser(),
        ssh_key=Path(get("DEPLOYBOT_SSH_KEY", "~/.ssh/id_ed25519")).expanduser(),
        nixos_anywhere=prefix,
        nix=nix or ("nix",),
        sops=get("DEPLOYBOT_SOPS", "") or _default_sops(),
        sops_env=sops_env,
    )
