"""``deploybot check``: one table, every problem named, no secret value printed."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from bot.remote.nix import OLDEST_NIX, version
from tests.lab.sops import SopsSecrets
from tests.service.cli import deploybot
from tests.world import make_host_key

SECRET_KEY = "web_ssh_host_ed25519_key"


def write_setup(tmp_path: Path, sops: SopsSecrets, *, keys: list[str]) -> dict[str, str]:
    ssh_key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_key)], check=True)
    lines = ["[machines.web]", 'host = "127.0.0.1"', f'secrets_file = "{sops.path}"']
    lines += [f'host_key_secret = "{keys[0]}"']
    if len(keys) > 1:
        lines += [f'luks_passphrase_secret = "{keys[1]}"', "luks = true"]
    (tmp_path / "machines.toml").write_text("\n".join(lines) + "\n")
    return {
        "TELEGRAM_BOT_TOKEN": "123456:" + "A" * 35,
        "DEPLOYBOT_ADMINS": "42",
        "DEPLOYBOT_SSH_KEY": str(ssh_key),
        "DEPLOYBOT_SOPS": sops.sops,
        "DEPLOYBOT_STATE_DIR": str(tmp_path / "state"),
        "SOPS_AGE_KEY_FILE": str(sops.age_key_file),
        "HOME": str(tmp_path),
    }


async def test_everything_in_order(tmp_path: Path, make_sops: object) -> None:
    private = make_host_key(tmp_path)
    sops: SopsSecrets = make_sops({SECRET_KEY: private, "web_luks": "hunter2hunter2"})  # type: ignore[operator]
    env = write_setup(tmp_path, sops, keys=[SECRET_KEY, "web_luks"])
    code, out, err = await deploybot("check", cwd=tmp_path, env=env)
    assert code == 0, out + err
    assert "all good" in out
    assert f"ok    web: {SECRET_KEY}" in out
    assert "hunter2" not in out + err
    assert "PRIVATE KEY" not in out + err


async def test_each_problem_is_a_failed_row(tmp_path: Path, make_sops: object) -> None:
    sops: SopsSecrets = make_sops({SECRET_KEY: "x"})  # type: ignore[operator]
    env = write_setup(tmp_path, sops, keys=[SECRET_KEY, "absent_key"])
    os.chmod(env["DEPLOYBOT_SSH_KEY"], 0o644)
    env.pop("TELEGRAM_BOT_TOKEN")
    code, out, _ = await deploybot("check", cwd=tmp_path, env=env)
    assert code == 1
    assert "FAIL  TELEGRAM_BOT_TOKEN" in out
    assert "readable by others (chmod 600" in out
    assert "web: absent_key" in out
    assert "has no key 'absent_key'" in out
    # The host key secret decrypts, but is no private key: no system key can come from it.
    assert "FAIL  web: keys" in out
    assert f"{SECRET_KEY} in {sops.path} is not an OpenSSH private key" in out
    assert "4 problem(s)" in out


async def test_no_age_key_is_explained(tmp_path: Path, make_sops: object) -> None:
    sops: SopsSecrets = make_sops({SECRET_KEY: "x"})  # type: ignore[operator]
    env = write_setup(tmp_path, sops, keys=[SECRET_KEY])
    env["SOPS_AGE_KEY_FILE"] = str(tmp_path / "missing-age-key.txt")
    code, out, _ = await deploybot("check", cwd=tmp_path, env=env)
    assert code == 1
    assert "FAIL  web: " in out
    assert "SOPS_AGE_KEY_FILE" in out
    assert "missing-age-key.txt does not exist" in out


async def test_bad_inventory_rows(tmp_path: Path) -> None:
    (tmp_path / "machines.toml").write_text('[machines.web]\nhost = "h"\nreboot_check = "nope"\n')
    code, out, _ = await deploybot("check", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert code == 1
    assert "FAIL  inventory" in out
    assert "web: reboot_check: 'nope' is not a cron expression" in out


async def test_the_nix_row_says_whether_it_can_build(tmp_path: Path, make_sops: object) -> None:
    sops: SopsSecrets = make_sops({SECRET_KEY: make_host_key(tmp_path)})  # type: ignore[operator]
    env = write_setup(tmp_path, sops, keys=[SECRET_KEY])
    said = (await asyncio.to_thread(nix_version)).strip()
    code, out, _ = await deploybot("check", cwd=tmp_path, env={**env, "DEPLOYBOT_NIX": "nix"})
    assert code == 0, out  # a warning: unlocking and watching need no Nix
    row = next(line for line in out.splitlines() if "DEPLOYBOT_NIX" in line)
    if (version(said) or (0, 0)) < OLDEST_NIX:  # Debian 12's nix-bin, as on CI: 2.8.0
        assert row.startswith("warn"), row
        assert "Nix 2.8: the bot's builds need Nix 2.9 or newer" in row, row
    else:
        assert row.startswith("ok"), row
        assert said in row, row
    env["DEPLOYBOT_NIX"] = str(tmp_path / "no-such-nix")
    code, out, _ = await deploybot("check", cwd=tmp_path, env=env)
    assert "no-such-nix: not found on PATH: installs and updates cannot build" in out


def nix_version() -> str:
    return subprocess.run(["nix", "--version"], capture_output=True, text=True).stdout
