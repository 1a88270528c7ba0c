"""Settings: deploy.env under the real environment, every variable parsed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config.settings import SettingsError, load_settings, read_env_file
from bot.core.durations import format_duration, parse_duration


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "deploy.env"
    env_file.write_text(
        "# comment\n"
        "TELEGRAM_BOT_TOKEN=123:from-file\n"
        "export DEPLOYBOT_ADMINS=1, 2\n"
        "DEPLOYBOT_NIXOS_ANYWHERE='python3 /opt/na.py --fast'\n"
        "DEPLOYBOT_FLAKE=/srv/flake  # trailing comment\n"
    )
    settings = load_settings(env_file, {"TELEGRAM_BOT_TOKEN": "123:from-env", "HOME": "/x"})
    assert settings.token == "123:from-env"
    assert settings.admins == frozenset({1, 2})
    assert settings.nixos_anywhere == ("python3", "/opt/na.py", "--fast")
    assert settings.flake == "/srv/flake"
    assert "123" not in repr(settings)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {})
    assert settings.token is None
    assert settings.api_url == "https://api.telegram.org/bot"
    assert settings.inventory == Path("machines.toml")
    assert settings.nixos_anywhere == ("nix", "run", "github:nix-community/nixos-anywhere", "--")
    assert Path(settings.sops).name == "sops"
    assert settings.nix == ("nix",)


def test_sops_variables_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {"SOPS_AGE_KEY_FILE": "/k.txt", "UNRELATED": "x"})
    assert dict(settings.sops_env) == {"SOPS_AGE_KEY_FILE": "/k.txt"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("DEPLOYBOT_ADMINS=12,bob", "DEPLOYBOT_ADMINS: 'bob' is not a Telegram user id"),
        ("TELEGRAM_API_URL=ftp://x", "TELEGRAM_API_URL must start with https://"),
        ("DEPLOYBOT_NIXOS_ANYWHERE='unclosed", "DEPLOYBOT_NIXOS_ANYWHERE"),
        ("DEPLOYBOT_NIX='unclosed", "DEPLOYBOT_NIX"),
        ("not a setting", "expected KEY=value"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, line: str, message: str) -> None:
    env_file = tmp_path / "deploy.env"
    env_file.write_text(line + "\n")
    with pytest.raises(SettingsError, match=message):
        load_settings(env_file, {})


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "nope.env", {})


def test_read_env_file_keeps_quoted_spaces(tmp_path: Path) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text('A="two words"\nB=\n')
    assert read_env_file(env_file) == {"A": "two words", "B": ""}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60), ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "15", "m5", "1h 30m", "0s", "-5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(4.2) == "4.2 s"
    assert format_duration(125) == "2 min 05 s"
    assert format_duration(3780) == "1 h 03 min"
