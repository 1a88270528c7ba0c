"""Settings from the environment, or from a ``deploy.env`` file beside the bot.

Real environment variables win over the file, so a secret can live in a service manager's
environment while the rest sits in the file. Secrets can also stay in files of their own
(``TELEGRAM_BOT_TOKEN_FILE``, ``SOPS_AGE_KEY_FILE``, ``DEPLOYBOT_SSH_KEY`` …): under systemd
a relative name is a credential in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``), so
neither the unit, the Nix store nor the process environment ever holds the secret itself.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bot.core.cron import cron_trigger
from bot.core.sops import KEY_VARIABLES, SopsReader, default_executable

DEFAULT_API_URL = "https://api.telegram.org/bot"
DEFAULT_NIXOS_ANYWHERE = "nix run github:nix-community/nixos-anywhere --"
DEFAULT_WEBHOOK_LISTEN = ("127.0.0.1", 8443)
#: What a Bot API token looks like: named in TELEGRAM_BOT_TOKEN_FILE by mistake, it must not
#: end up in an error message as a file name.
_TOKEN_SHAPE = re.compile(r"\d{3,}:[A-Za-z0-9_-]{20,}")


class SettingsError(ValueError):
    """A setting is malformed; the message names the variable and what to write instead."""


DEFAULT_REPORT = "0 8 * * 1"  # Mondays 08:00


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
    #: DEPLOYBOT_NIX: the nix executable (split like a shell would) that builds the closures.
    nix: tuple[str, ...] = ("nix",)
    sops: str = "sops"
    sops_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    webhook_url: str | None = None
    webhook_listen: tuple[str, int] = DEFAULT_WEBHOOK_LISTEN
    keep_days: int = 90
    #: DEPLOYBOT_REPORT: cron of the weekly report to the admins ("" = none).
    report: str = DEFAULT_REPORT
    #: DEPLOYBOT_ROLLOUT_PARALLEL: machines a rollout updates at once after its canary.
    rollout_parallel: int = 5

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


def secret_path(value: str, credentials: Path | None) -> Path:
    """Where a secret file setting points: relative names are systemd credentials.

    ``credentials`` is ``$CREDENTIALS_DIRECTORY`` (None outside a unit that loads any):
    there a relative name is the credential's name, as ``LoadCredential=NAME:…`` wrote it.
    Without it a relative name stays relative to the working directory, like every other
    path setting. Absolute paths, and ``~`` ones, are used as they are.
    """
    path = Path(value).expanduser()
    if credentials is not None and not path.is_absolute():
        return credentials / path
    return path


def _credentials_directory(environ: Mapping[str, str]) -> Path | None:
    value = environ.get("CREDENTIALS_DIRECTORY", "").strip()
    return Path(value) if value else None


def _read_token_file(value: str, credentials: Path | None) -> str:
    """The token in TELEGRAM_BOT_TOKEN_FILE; errors name the file, never its content."""
    if _TOKEN_SHAPE.search(value):
        raise SettingsError(
            "TELEGRAM_BOT_TOKEN_FILE holds what looks like the token itself: put the token "
            "in a file and name the file here (or set TELEGRAM_BOT_TOKEN)"
        )
    path = secret_path(value, credentials)
    where = f"TELEGRAM_BOT_TOKEN_FILE: {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = (
            f" (a relative name is a credential in CREDENTIALS_DIRECTORY={credentials})"
            if credentials is not None and not Path(value).expanduser().is_absolute()
            else ""
        )
        raise SettingsError(f"{where}: no such file{hint}") from None
    except PermissionError:
        raise SettingsError(f"{where}: not readable by this user") from None
    except IsADirectoryError:
        raise SettingsError(f"{where}: is a directory, not a file holding the token") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{where}: not a text file") from None
    except OSError as exc:
        raise SettingsError(f"{where}: cannot be read ({exc.strerror or 'error'})") from None
    token = text.strip()
    if not token:
        raise SettingsError(f"{where}: the file is empty (put the token from @BotFather in it)")
    if any(c.isspace() for c in token):
        raise SettingsError(f"{where}: expected the token alone on one line")
    return token


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
    if not nix:
        raise SettingsError("DEPLOYBOT_NIX is empty")
    api_url = get("TELEGRAM_API_URL", DEFAULT_API_URL)
    if not api_url.startswith(("https://", "http://")):
        raise SettingsError(
            f"TELEGRAM_API_URL must start with https:// or http://, not {api_url!r}"
        )
    credentials = _credentials_directory(environ)
    sops_env = {k: merged[k] for k in KEY_VARIABLES if merged.get(k)}
    keep_days = get("DEPLOYBOT_KEEP_DAYS", "90")
    if not keep_days.isdigit() or not 1 <= int(keep_days) <= 36500:
        raise SettingsError(
            f"DEPLOYBOT_KEEP_DAYS must be a number of days from 1 to 36500, not {keep_days[:20]!r}"
        )
    # Unset is the default; set to "" it is none, so this one is not read with get().
    report = merged.get("DEPLOYBOT_REPORT", DEFAULT_REPORT).strip()
    if report:
        try:
            cron_trigger(report)
        except ValueError as exc:
            raise SettingsError(
                f"DEPLOYBOT_REPORT must be a cron expression such as {DEFAULT_REPORT!r} "
                f'(Mondays 08:00) or "" for no weekly report, not {report[:40]!r} ({exc})'
            ) from None
    parallel = get("DEPLOYBOT_ROLLOUT_PARALLEL", "5")
    if not parallel.isdigit() or not 1 <= int(parallel) <= 100:
        raise SettingsError(
            "DEPLOYBOT_ROLLOUT_PARALLEL must be a number of machines from 1 to 100, "
            f"not {parallel[:20]!r}"
        )
    for name in ("SOPS_AGE_KEY_FILE", "SOPS_AGE_SSH_PRIVATE_KEY_FILE"):
        if name in sops_env:
            sops_env[name] = str(secret_path(sops_env[name], credentials))
    token = merged.get("TELEGRAM_BOT_TOKEN", "").strip() or None
    token_file = merged.get("TELEGRAM_BOT_TOKEN_FILE", "").strip()
    if token_file:
        if token is not None:
            raise SettingsError(
                "TELEGRAM_BOT_TOKEN and TELEGRAM_BOT_TOKEN_FILE are both set: keep one"
            )
        token = _read_token_file(token_file, credentials)
    return Settings(
        token=token,
        api_url=api_url,
        admins=_parse_admins(merged.get("DEPLOYBOT_ADMINS", "")),
        inventory=Path(get("DEPLOYBOT_INVENTORY", "machines.toml")).expanduser(),
        flake=get("DEPLOYBOT_FLAKE", "."),
        db=Path(get("DEPLOYBOT_DB", "deploybot.sqlite3")).expanduser(),
        state_dir=Path(get("DEPLOYBOT_STATE_DIR", "state")).expanduser(),
        ssh_key=secret_path(get("DEPLOYBOT_SSH_KEY", "~/.ssh/id_ed25519"), credentials),
        nixos_anywhere=prefix,
        nix=nix,
        sops=get("DEPLOYBOT_SOPS", "") or _default_sops(),
        sops_env=sops_env,
        webhook_url=_parse_webhook_url(get("DEPLOYBOT_WEBHOOK_URL", "")),
        webhook_listen=_parse_listen(get("DEPLOYBOT_WEBHOOK_LISTEN", "127.0.0.1:8443")),
        keep_days=int(keep_days),
        report=report,
        rollout_parallel=int(parallel),
    )


def _parse_webhook_url(text: str) -> str | None:
    """The public HTTPS URL Telegram posts updates to; its path is where the bot listens."""
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname:
        raise SettingsError(
            f"DEPLOYBOT_WEBHOOK_URL must be an https:// URL (Telegram posts only there), "
            f"not {text[:80]!r}"
        )
    if parts.query or parts.fragment:
        raise SettingsError("DEPLOYBOT_WEBHOOK_URL: no query or fragment, a path only")
    return text


def _parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8443`` for IPv6) the webhook server binds to."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(
            f"DEPLOYBOT_WEBHOOK_LISTEN: expected host:port such as 127.0.0.1:8443, "
            f"not {text[:80]!r}"
        )
    return host, int(port)
