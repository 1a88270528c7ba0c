"""The command line as a user runs it: console mode, run without a token, check."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.service.cli import ROOT, deploybot


async def test_console_answers_machines_from_the_example_inventory(tmp_path: Path) -> None:
    shutil.copy(ROOT / "machines.example.toml", tmp_path)
    code, out, err = await deploybot(
        "console", cwd=tmp_path, stdin=b"/machines\n/whoami\n/status clawsiecats\n"
    )
    assert code == 0, err
    assert "bot> Machines (1):" in out
    assert "clawsiecats — 12.121.212.121, .#clawsiecats-luks, LUKS, state: unknown" in out
    assert "You are 1 (@console): admin (every machine)." in out
    assert "not probed (example inventory)" in out
    assert "showing machines.example.toml" in err


async def test_console_uses_machines_toml_when_present(tmp_path: Path) -> None:
    (tmp_path / "machines.toml").write_text('[machines.mine]\nhost = "127.0.0.1"\nssh_port = 1\n')
    code, out, err = await deploybot("console", cwd=tmp_path, stdin=b"/status mine\n")
    assert code == 0, err
    assert "mine — 127.0.0.1" in out
    assert "ssh 127.0.0.1:1 closed" in out


async def test_run_without_token_says_how_to_get_one(tmp_path: Path) -> None:
    code, _, err = await deploybot("run", cwd=tmp_path)
    assert code == 2
    assert "@BotFather" in err
    assert "/newbot" in err


async def test_bad_inventory_is_refused_naming_machine_and_key(tmp_path: Path) -> None:
    (tmp_path / "machines.toml").write_text('[machines.web]\nhost = "h"\nprobe_interval = "5x"\n')
    code, _, err = await deploybot("console", cwd=tmp_path)
    assert code == 1
    assert "web: probe_interval: bad duration '5x'" in err


async def test_env_file_option(tmp_path: Path) -> None:
    (tmp_path / "other.toml").write_text('[machines.fromenv]\nhost = "127.0.0.1"\n')
    (tmp_path / "custom.env").write_text(f"DEPLOYBOT_INVENTORY={tmp_path / 'other.toml'}\n")
    code, out, err = await deploybot(
        "--env", "custom.env", "console", cwd=tmp_path, stdin=b"/machines\n"
    )
    assert code == 0, err
    assert "fromenv" in out


async def test_console_never_acts_on_the_example_machines(tmp_path: Path) -> None:
    shutil.copy(ROOT / "machines.example.toml", tmp_path)
    code, out, err = await deploybot(
        "console", cwd=tmp_path, stdin=b"/deploy clawsiecats\n/unlock clawsiecats\n"
    )
    assert code == 0, err
    assert out.count("copy machines.example.toml to machines.toml") == 2
    assert "Deploy clawsiecats (job" not in out


async def test_console_has_no_reload(tmp_path: Path) -> None:
    """The console's settings are its own (the person at the terminal is admin): /reload
    answers that a restart reads them again, and SIGHUP stays a terminal's hangup."""
    shutil.copy(ROOT / "machines.example.toml", tmp_path)
    code, out, err = await deploybot("console", cwd=tmp_path, stdin=b"/reload\n")
    assert code == 0, err
    assert "bot> Nothing to reload here: restart to read it again." in out
