"""Running as a service: the systemd units, and the bot reading its token as a credential.

``contrib/deploybot.service`` and the unit NixOS would write from ``nix/module.nix`` must
pass ``systemd-analyze verify`` without a warning, keep their exposure (``systemd-analyze
security --offline=true``) at most 4.0 — a policy on the hardening, not a timing — and
harden alike. ``bench/service.py`` prints the exposure figures.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.fake_telegram import FakeTelegram
from tests.service_tools import (
    CONTRIB_UNIT,
    ROOT,
    evaluate_module,
    exposure,
    parse_unit,
    render_unit,
    runnable_contrib_unit,
    verify,
)

MAX_EXPOSURE = 4.0
STORE = "/nix/store/00000000000000000000000000000000-"
#: Keys whose values differ by design between the two units (paths, how secrets are named).
LAYOUT_KEYS = {"ExecStart", "ExecReload", "Environment", "LoadCredential"}
BOOLEANS = {"true": "yes", "false": "no"}
MODULE_CONFIG = {
    "services": {
        "deploybot": {
            "enable": True,
            "tokenFile": "/run/secrets/telegram-token",
            "sshKeyFile": "/run/secrets/ssh-key",
            "ageKeyFile": "/run/secrets/age-key",
            "settings": {"flake": "github:me/infra"},
            "machines": {"web": {"host": "10.0.0.1"}},
        }
    }
}


@pytest.fixture(scope="module")
def module_service() -> dict[str, Any]:
    service: dict[str, Any] = evaluate_module(MODULE_CONFIG)["service"]
    return service


def module_unit(service: dict[str, Any]) -> str:
    return render_unit(
        service,
        {
            f"{STORE}deploybot-0.1.0/bin/deploybot": "/bin/true",
            f"{STORE}coreutils-9.5/bin/kill": "/bin/kill",
        },
    )


def test_contrib_unit_verifies_cleanly() -> None:
    done = verify(runnable_contrib_unit())
    assert done.returncode == 0, done.stderr
    # verify exits 0 on unknown keys and bad values too, warning only: none allowed.
    assert done.stderr == "", done.stderr


def test_contrib_unit_exposure() -> None:
    assert exposure(runnable_contrib_unit()) <= MAX_EXPOSURE


def test_module_unit_verifies_cleanly_and_exposure(module_service: dict[str, Any]) -> None:
    unit = module_unit(module_service)
    done = verify(unit)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert exposure(unit) <= MAX_EXPOSURE


def test_contrib_and_module_harden_alike(module_service: dict[str, Any]) -> None:
    contrib = parse_unit(CONTRIB_UNIT.read_text())["Service"]
    module = parse_unit(module_unit(module_service))["Service"]
    for key, values in contrib.items():
        if key in LAYOUT_KEYS:
            continue
        # Lists are one line per item in NixOS's rendering, space-separated in contrib.
        mine = " ".join(BOOLEANS.get(v, v) for v in module.get(key, []))
        assert mine == " ".join(values), f"{key}: contrib {values}, module {mine}"
    assert set(module) - set(contrib) <= LAYOUT_KEYS
    contrib_env = dict(v.split("=", 1) for v in contrib["Environment"])
    module_env = dict(v.strip('"').split("=", 1) for v in module["Environment"])
    for name in ("TELEGRAM_BOT_TOKEN_FILE", "DEPLOYBOT_SSH_KEY", "DEPLOYBOT_INVENTORY"):
        assert contrib_env[name] == module_env[name], name
    assert contrib["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert contrib["ExecStart"] == [
        "/opt/deploybot/bin/deploybot --env /etc/deploybot/deploy.env run"
    ]
    names = {entry.split(":", 1)[0] for entry in contrib["LoadCredential"]}
    assert names == {"telegram-bot-token", "ssh-key", "sops-age-key"}
    assert names <= {entry.split(":", 1)[0] for entry in module["LoadCredential"]}


@pytest_asyncio.fixture
async def credentials_bot(
    fake_telegram: FakeTelegram, tmp_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``deploybot run`` as the units start it: the token only in a credentials file."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "telegram-bot-token").write_text(fake_telegram.token + "\n")
    (tmp_path / "machines.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DEPLOYBOT_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "TELEGRAM_API_URL": fake_telegram.base_url,
            "TELEGRAM_BOT_TOKEN_FILE": "telegram-bot-token",
            "CREDENTIALS_DIRECTORY": str(credentials),
            "DEPLOYBOT_DB": str(tmp_path / "deploybot.sqlite3"),
            "DEPLOYBOT_STATE_DIR": str(tmp_path / "state"),
        }
    )
    output = tmp_path / "bot-output.log"
    with output.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log = output.read_text(errors="replace")
        assert fake_telegram.token not in log
        if sys.exc_info()[0] is not None:
            print(log[-5000:])


async def test_bot_polls_with_the_token_from_its_credentials(
    fake_telegram: FakeTelegram, credentials_bot: asyncio.subprocess.Process
) -> None:
    tg = fake_telegram
    await tg.wait_until(
        lambda: tg.count("getUpdates") > 0 or credentials_bot.returncode is not None,
        timeout=30,
        what="the bot polling",
    )
    assert credentials_bot.returncode is None
    # The fake Bot API answers its own token only (401 otherwise), and PTB polls only after
    # its first calls (getMe) succeeded: the token was the one in the credentials file.
    answered = [r for r in tg.calls() if r.status]
    assert any(r.method == "getMe" for r in answered)
    assert all(r.ok for r in answered), [(r.method, r.status) for r in answered]


async def test_missing_credential_is_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DEPLOYBOT_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "TELEGRAM_BOT_TOKEN_FILE": "telegram-bot-token",
            "CREDENTIALS_DIRECTORY": str(tmp_path),
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert f"TELEGRAM_BOT_TOKEN_FILE: {tmp_path / 'telegram-bot-token'}: no such file" in (
        err.decode()
    )
