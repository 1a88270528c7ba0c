"""Inventory validation: every mistake is refused with the machine and the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config.inventory import InventoryError, load_inventory

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "machines.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(write(tmp_path, text))
    return caught.value.problems


def test_example_inventory_loads_with_every_key() -> None:
    inventory = load_inventory(ROOT / "machines.example.toml")
    machine = inventory.machines["clawsiecats"]
    assert machine.host == "12.121.212.121"
    assert machine.flake_attr == "clawsiecats-luks"
    assert machine.luks is True
    assert machine.initrd_port == 2222
    assert machine.operators == frozenset({123456789})
    assert machine.probe_interval == 60.0
    assert machine.boot_timeout == 15 * 60
    assert machine.unlock_timeout == 30 * 60
    assert machine.rollback_timeout == 90.0
    assert machine.secrets_file == ROOT / "machines" / "secrets.yaml"
    assert machine.checks == ("tcp:443", "http://127.0.0.1:8080/health")
    assert machine.tags == ("web", "eu")
    assert machine.canary is True
    assert [m.name for m in inventory.tagged("eu")] == ["clawsiecats"]
    assert inventory.tagged("db") == []


def test_defaults_apply(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, '[machines.web]\nhost = "10.0.0.1"\n'))
    web = inventory.machines["web"]
    assert (web.flake_attr, web.ssh_port, web.luks, web.unlock) == ("web", 22, False, "auto")
    assert web.persist_dir == "/nix/persist/system"
    assert web.operators == frozenset()
    assert web.rollback_timeout == 90.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('host = "a.example"\nlusk = true', "web: lusk: unknown key"),
        ('host = "a.example"\nluks = "yes"', "web: luks: expected true or false"),
        ('host = "a.example"\nssh_port = "22"', "web: ssh_port: expected an integer"),
        ('host = "a.example"\nssh_port = true', "web: ssh_port: expected an integer"),
        ('flake_attr = "web"', "web: host: missing"),
        ('host = "-oProxyCommand=x"', "web: host: '-oProxyCommand=x' is not an IP address"),
        ('host = "a.example"\nprobe_interval = "5x"', "web: probe_interval: bad duration '5x'"),
        ('host = "a.example"\nboot_timeout = "15"', "web: boot_timeout: bad duration '15'"),
        ('host = "a.example"\nrollback_timeout = "1s"', "web: rollback_timeout: expected between"),
        ('host = "a.example"\nrollback_timeout = "2h"', "web: rollback_timeout: expected between"),
        ('host = "a.example"\nreboot_check = "61 4 * * *"', "web: reboot_check: '61 4 * * *'"),
        ('host = "a.example"\noperators = ["alice"]', "web: operators: 'alice' is not a Telegram"),
        ('host = "a.example"\noperators = [1.5]', "web: operators: 1.5 is not a Telegram"),
        ('host = "a.example"\nunlock = "dropbear"', "web: unlock: 'dropbear'"),
        ('host = "a.example"\nssh_port = 70000', "web: ssh_port: 70000 is not a TCP port"),
        ('host = "a.example"\nchecks = ["udp:53"]', "web: checks: 'udp:53'"),
        ('host = "a.example"\ntags = "web"', "web: tags: expected a list"),
        ('host = "a.example"\ntags = ["Web Servers"]', "web: tags: 'Web Servers' is not a tag"),
        ('host = "a.example"\ntags = [7]', "web: tags: '7' is not a tag"),
        (
            'host = "a.example"\nauto_unlock = true',
            "web: auto_unlock: needs luks_passphrase_secret",
        ),
        ('host = "a.example"\nhost_key_secret = "k"', "web: secrets_file: missing"),
        ('host = "a.example"\npersist_dir = "../etc"', "web: persist_dir"),
        ('host = "a.example"\nflake_attr = "--impure"', "web: flake_attr: '--impure'"),
    ],
)
def test_each_mistake_names_machine_and_key(tmp_path: Path, body: str, expected: str) -> None:
    found = problems(tmp_path, f"[machines.web]\n{body}\n")
    assert any(p.startswith(expected) for p in found), found


def test_duplicate_host_and_port_is_refused(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[machines.a]\nhost = "10.0.0.1"\n[machines.b]\nhost = "10.0.0.1"\n',
    )
    assert found == ["b: host 10.0.0.1:22 is also machine a (each machine needs its own address)"]


def test_same_host_other_port_is_fine(tmp_path: Path) -> None:
    text = '[machines.a]\nhost = "10.0.0.1"\n[machines.b]\nhost = "10.0.0.1"\nssh_port = 2200\n'
    assert len(load_inventory(write(tmp_path, text))) == 2


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[machines.a]\nhost = "h1"\nluks = 1\n[machines.b]\nprobe_interval = "x"\nhost = "h2"\n',
    )
    assert [p.split(":")[0] for p in found] == ["a", "b"]


def test_bad_machine_name_and_bad_toml(tmp_path: Path) -> None:
    assert "machine names are lowercase" in problems(tmp_path, '[machines."a b"]\nhost="x"\n')[0]
    assert "not valid TOML" in problems(tmp_path, "[machines.a\n")[0]


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"machines\.example\.toml"):
        load_inventory(tmp_path / "absent.toml")
