"""Where a machine's keys come from: the order of the sources, contradictions, the sops
key's public half (derived once per file version), the inventory's ``host_key``, the
recorded sources, and the lab's ``ssh-keygen`` that the bot reads the initrd key with.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from bot.config.inventory import InventoryError, Machine, load_inventory
from bot.core.keys import fingerprint, generate_ed25519, public_from_private
from bot.core.sops import SopsReader
from bot.remote.pins import (
    INVENTORY_INITRD,
    INVENTORY_SYSTEM,
    RECORDED,
    SopsHostKeys,
    adopted_source,
    booted_source,
    describe,
    resolve,
)
from store import MachineState, Store
from tests.lab.lab import Lab
from tests.lab.sops import SopsSecrets
from tests.world import make_host_key

MakeSops = Callable[[Mapping[str, str]], SopsSecrets]
A, B, C = (generate_ed25519().public for _ in range(3))
BOOT = booted_source("/boot/ssh_host_ed25519_key")
MACHINE = Machine(name="web", host="127.0.0.1", flake_attr="web", luks=True)


def state(**fields: str) -> MachineState:
    return MachineState(name="web", **fields)


def test_recorded_wins_then_inventory_then_sops() -> None:
    pins = resolve(MACHINE, state(host_key=A, initrd_host_key=B), sops_key=A)
    assert (pins.system, pins.system_source) == (A, RECORDED)
    assert (pins.initrd, pins.initrd_source) == (B, RECORDED)
    pins = resolve(replace(MACHINE, host_key=A, initrd_host_key=B), state(), sops_key=A)
    assert (pins.system_source, pins.initrd_source) == (INVENTORY_SYSTEM, INVENTORY_INITRD)
    pins = resolve(replace(MACHINE, host_key_secret="web_key"), state(), sops_key=A)
    assert (pins.system, pins.system_source, pins.conflicts) == (A, "sops (web_key)", ())


def test_the_inventory_wins_over_what_was_read_or_adopted_when_they_agree() -> None:
    known = state(
        host_key=A,
        host_key_source=adopted_source("@opal"),
        initrd_host_key=B,
        initrd_host_key_source=BOOT,
    )
    pins = resolve(replace(MACHINE, host_key=A, initrd_host_key=B), known)
    assert (pins.system_source, pins.initrd_source) == (INVENTORY_SYSTEM, INVENTORY_INITRD)
    pins = resolve(MACHINE, known)
    assert (pins.system_source, pins.initrd_source) == (adopted_source("@opal"), BOOT)


@pytest.mark.parametrize(
    ("machine", "known", "sops", "what"),
    [
        (replace(MACHINE, host_key=A), state(), B, "system key"),
        (MACHINE, state(host_key=A), B, "system key"),
        (replace(MACHINE, host_key=A), state(host_key=C), "", "system key"),
        (replace(MACHINE, initrd_host_key=A), state(initrd_host_key=B), "", "initrd key"),
        (
            replace(MACHINE, initrd_host_key=A),
            state(initrd_host_key=B, initrd_host_key_source=BOOT),
            "",
            "initrd key",
        ),
    ],
)
def test_a_contradiction_leaves_that_key_unpinned_and_names_both(
    machine: Machine, known: MachineState, sops: str, what: str
) -> None:
    pins = resolve(replace(machine, host_key_secret="web_key"), known, sops_key=sops)
    (conflict,) = pins.conflicts
    assert conflict.startswith(what)
    assert fingerprint(A) in conflict
    assert fingerprint(B if B in (sops, known.host_key, known.initrd_host_key) else C) in conflict
    assert (pins.system if what == "system key" else pins.initrd) == ""
    lines = describe(machine, pins)
    assert f"⚠️ contradiction, {conflict}" in lines


def test_comments_do_not_make_a_contradiction() -> None:
    pins = resolve(replace(MACHINE, host_key=f"{A} root@web"), state(host_key=A))
    assert pins.conflicts == ()
    assert pins.system == A


def test_describe_says_what_is_missing() -> None:
    lines = describe(MACHINE, resolve(MACHINE, state()))
    assert lines == [
        "system key: none (/adopt web pins the key it presents)",
        "initrd key: none yet (read from /boot/ssh_host_ed25519_key once the system is up)",
    ]
    lines = describe(MACHINE, resolve(MACHINE, state(host_key=A, initrd_host_key=B)))
    assert lines == [
        f"system key {fingerprint(A)} (recorded at deploy)",
        f"initrd key {fingerprint(B)} (recorded at deploy)",
    ]


def counting_sops(tmp_path: Path, sops: SopsSecrets) -> tuple[SopsReader, Path]:
    """The real sops behind a wrapper that counts how often it runs."""
    count = tmp_path / "count"
    wrapper = tmp_path / "sops-counting"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{count}"\nexec "{sops.sops}" "$@"\n')
    wrapper.chmod(0o755)
    return SopsReader(str(wrapper), sops.env), count


def runs(count: Path) -> int:
    return len(count.read_text().splitlines()) if count.exists() else 0


async def test_the_sops_key_is_derived_once_per_file_version(
    tmp_path: Path, make_sops: MakeSops
) -> None:
    private = make_host_key(tmp_path)
    sops = make_sops({"web_key": private, "not_a_key": "hunter2"})
    reader, count = counting_sops(tmp_path, sops)
    keys = SopsHostKeys(reader)
    machine = replace(MACHINE, secrets_file=sops.path, host_key_secret="web_key")
    expected = public_from_private(private, comment="")
    for _ in range(3):
        assert await keys.public_key(machine) == (expected, "")
    assert runs(count) == 1
    info = sops.path.stat()
    os.utime(sops.path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    assert await keys.public_key(machine) == (expected, "")
    assert runs(count) == 2
    wrong = replace(machine, host_key_secret="not_a_key")
    key, problem = await keys.public_key(wrong)
    assert key == ""
    assert "not_a_key" in problem
    assert "not an OpenSSH private key" in problem
    assert "hunter2" not in problem
    await keys.public_key(wrong)
    assert runs(count) == 3  # a failure is remembered too, for a while


def test_host_key_in_the_inventory_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "machines.toml"
    path.write_text(
        '[machines.web]\nhost = "h"\nhost_key = "ssh-ed25519 notbase64!"\n'
        'initrd_host_key_file = "boot/key"\n'
    )
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    found = caught.value.problems
    assert any(p.startswith("web: host_key: expected an OpenSSH public key line") for p in found)
    assert any(p.startswith("web: initrd_host_key_file: 'boot/key'") for p in found)
    path.write_text(f'[machines.web]\nhost = "h"\nhost_key = "{A} root@web"\n')
    machine = load_inventory(path).machines["web"]
    assert machine.host_key == f"{A} root@web"
    assert machine.initrd_host_key_file == "/boot/ssh_host_ed25519_key"


async def test_sources_are_kept_next_to_the_keys(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        await store.update_machine("web", host_key=A, host_key_source=adopted_source("@opal"))
        await store.update_machine("web", initrd_host_key=B, initrd_host_key_source=BOOT)
    finally:
        await store.close()
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        known = await store.machine("web")
    finally:
        await store.close()
    assert (known.host_key_source, known.initrd_host_key_source) == (adopted_source("@opal"), BOOT)


def test_the_booted_lab_host_prints_its_initrd_key_with_the_real_ssh_keygen(lab: Lab) -> None:
    host = lab.start_installed_host("booted", stage="booted")
    argv = lab.ssh_argv(host)
    out = subprocess.run(
        [*argv, "ssh-keygen -y -f /boot/ssh_host_ed25519_key"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert out.split()[:2] == (host.initrd_host_key or "").split()
    listed = subprocess.run(
        [*argv, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert fingerprint(host.system_host_key or "") in listed
    assert str(lab.dir) not in listed
    missing = subprocess.run(
        [*argv, "ssh-keygen -y -f /boot/nothing"], capture_output=True, text=True, timeout=30
    )
    assert missing.returncode != 0
    assert "/boot/nothing" in missing.stderr
    assert str(lab.dir) not in missing.stderr
