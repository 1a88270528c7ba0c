"""Where a machine is, judged from the keys its ports present: no network needed."""

from __future__ import annotations

import pytest

from bot.config.inventory import Machine
from bot.core.keys import generate_ed25519
from bot.remote.pins import resolve
from bot.remote.place import Pins, Place, classify, same_key
from store import MachineState

SYSTEM = generate_ed25519("system").public
INITRD = generate_ed25519("initrd").public
INSTALLER = generate_ed25519("installer").public
STRANGER = generate_ed25519("stranger").public
PINS = Pins(system=SYSTEM, initrd=INITRD, installer=INSTALLER, initrd_source="test")
SYS_AT, INITRD_AT = "10.0.0.1:22", "10.0.0.1:2222"


def look(pins: Pins, system: str | None, initrd: str | None) -> Place:
    return classify(
        pins, system=system, initrd=initrd, system_where=SYS_AT, initrd_where=INITRD_AT
    ).place


@pytest.mark.parametrize(
    ("system", "initrd", "place"),
    [
        (SYSTEM, None, Place.SYSTEM),
        (SYSTEM, STRANGER, Place.SYSTEM),
        (None, INITRD, Place.INITRD),
        (None, STRANGER, Place.WRONG_KEY),
        (STRANGER, INITRD, Place.WRONG_KEY),
        (INSTALLER, None, Place.INSTALLER),
        (STRANGER, None, Place.WRONG_KEY),
        (INITRD, None, Place.WRONG_KEY),
        (None, SYSTEM, Place.WRONG_KEY),
        (None, None, Place.NOTHING),
    ],
)
def test_two_ports(system: str | None, initrd: str | None, place: Place) -> None:
    assert look(PINS, system, initrd) is place


def test_the_values_are_the_states_the_store_keeps() -> None:
    assert {p.value for p in Place} == {"up", "initrd", "installer", "unknown", "down"}


def test_nothing_pinned_is_never_up_or_initrd() -> None:
    nothing = Pins()
    assert look(nothing, SYSTEM, None) is Place.WRONG_KEY
    assert look(nothing, None, INITRD) is Place.WRONG_KEY
    assert look(nothing, None, None) is Place.NOTHING


def test_an_initrd_mismatch_is_reported_on_the_initrd_port() -> None:
    seen = classify(PINS, system=None, initrd=STRANGER, system_where=SYS_AT, initrd_where=INITRD_AT)
    assert seen.on_initrd_port
    assert seen.where == INITRD_AT
    assert seen.presented == STRANGER
    assert "another host key" in seen.detail


def test_a_stranger_on_the_system_port_is_not_an_initrd_mismatch() -> None:
    seen = classify(PINS, system=STRANGER, initrd=None, system_where=SYS_AT, initrd_where=INITRD_AT)
    assert seen.place is Place.WRONG_KEY
    assert not seen.on_initrd_port
    assert seen.where == SYS_AT


def test_one_port_for_both() -> None:
    """initrd_port == ssh_port: one key, judged as system key first, then initrd key."""

    def same_port(key: str) -> Place:
        return classify(
            PINS, system=key, initrd=key, system_where=SYS_AT, initrd_where=SYS_AT
        ).place

    assert same_port(SYSTEM) is Place.SYSTEM
    assert same_port(INITRD) is Place.INITRD
    assert same_port(STRANGER) is Place.WRONG_KEY


def test_nothing_answering_keeps_the_reason() -> None:
    seen = classify(PINS, system=None, initrd=None, why="refused")
    assert seen.place is Place.NOTHING
    assert seen.detail == "refused"


def test_same_key_ignores_comments_and_rejects_garbage() -> None:
    bare = " ".join(SYSTEM.split()[:2])
    assert same_key(SYSTEM, bare + " another comment")
    assert not same_key(SYSTEM, INITRD)
    assert not same_key(SYSTEM, "not a key")


def test_a_machine_not_installed_yet_presenting_another_key_is_in_an_installer() -> None:
    fresh = Pins(system=SYSTEM, system_source="sops (key)", installed=False)
    seen = classify(fresh, system=STRANGER, initrd=None, system_where="h:22")
    assert seen.place is Place.INSTALLER
    assert seen.detail.startswith("not installed yet")
    assert classify(fresh, system=SYSTEM, initrd=None).place is Place.SYSTEM
    # Once installed (or seen up), the same key is a changed key.
    installed = Pins(system=SYSTEM, system_source="sops (key)")
    assert classify(installed, system=STRANGER, initrd=None).place is Place.WRONG_KEY


def test_pins_say_installed_once_the_bot_installed_saw_or_recorded_it() -> None:
    machine = Machine(name="m", host="127.0.0.1", flake_attr="m", host_key=SYSTEM)
    assert not resolve(machine, MachineState("m")).installed
    assert resolve(machine, MachineState("m", boot_id="b")).installed
    assert resolve(machine, MachineState("m", installed_at="2026-01-01")).installed
    assert resolve(machine, MachineState("m", host_key=SYSTEM)).installed
