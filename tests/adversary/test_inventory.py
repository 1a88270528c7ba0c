"""Inventory values that pass a loose check but break or weaken the bot (issue: attacked as
an adversary would). Each test writes the hostile value and shows it refused or defused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config.inventory import InventoryError, load_inventory
from bot.core.durations import parse_duration
from bot.remote.health import check_argv


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "machines.toml"
    path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    return caught.value.problems


def test_an_infinite_probe_interval_is_refused_not_a_crash(tmp_path: Path) -> None:
    huge = "9" * 400 + "s"  # float() of it is inf
    found = problems(tmp_path, f'[machines.web]\nhost = "10.0.0.1"\nprobe_interval = "{huge}"\n')
    assert len(found) == 1
    assert found[0].startswith("web: probe_interval: duration")
    assert "longer than a year" in found[0]
    with pytest.raises(ValueError, match="longer than a year"):
        parse_duration("400d")
    assert parse_duration("366d") == 366 * 86400


@pytest.mark.parametrize("persist", ["/boot", "/./././boot", "/./boot/keys", "/boot/."])
def test_a_persist_dir_on_the_unencrypted_boot_is_refused(tmp_path: Path, persist: str) -> None:
    found = problems(tmp_path, f'[machines.web]\nhost = "10.0.0.1"\npersist_dir = "{persist}"\n')
    assert found == [
        f"web: persist_dir: {persist!r} is on /boot, which is not encrypted: the host key "
        "would lie there in the clear"
    ]


def test_a_folder_merely_named_like_boot_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "machines.toml"
    path.write_text('[machines.web]\nhost = "10.0.0.1"\npersist_dir = "/nix/boot"\n')
    assert load_inventory(path).machines["web"].persist_dir == "/nix/boot"


@pytest.mark.parametrize(
    "alias", ["127.1", "0x7f.1", "0177.0.0.1", "2130706433", "::ffff:127.0.0.1"]
)
def test_numeric_aliases_of_one_address_are_one_address(tmp_path: Path, alias: str) -> None:
    found = problems(
        tmp_path,
        f'[machines.victim]\nhost = "127.0.0.1"\n[machines.evil]\nhost = "{alias}"\n',
    )
    assert found == [
        f"evil: host {alias}:22 is also machine victim (each machine needs its own address)"
    ]


def test_curl_checks_take_the_url_literally() -> None:
    argv = check_argv("http://127.0.0.1/[1-99999]{a,b,c}", 5)
    assert argv[0] == "curl"
    assert "--globoff" in argv
    assert argv[-1] == "http://127.0.0.1/[1-99999]{a,b,c}"
