"""Where a machine is: one look at its SSH ports, judged by the keys the bot pinned.

"Up" always means "answers with the pinned system key": an installer still answering on
port 22 with its own key, or anything with a key the bot did not pin, is not the machine.
A machine never installed (its system key comes from sops or the inventory, and the bot has
neither installed it nor seen it up) that presents another key is taken as not installed
yet, in an installer or its old system: no changed key (docs/keys.md).
An initrd counts only when it proves the pinned initrd key and the system port is silent,
since only then is it the machine waiting for its passphrase. The values of :class:`Place`
are the states the store keeps.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

from bot.config.inventory import Machine
from bot.core.keys import fingerprint, parse_public_key
from bot.remote.ssh import SshError, fetch_host_key


class Place(StrEnum):
    """Where a look found the machine (the store's ``state`` column)."""

    SYSTEM = "up"
    INITRD = "initrd"
    INSTALLER = "installer"
    WRONG_KEY = "unknown"
    NOTHING = "down"


@dataclass(frozen=True)
class Pins:
    """The keys a machine must present, where each came from, and the contradictions
    between sources that left a key unpinned (``bot.remote.pins``)."""

    system: str = ""
    initrd: str = ""
    installer: str = ""
    initrd_source: str = ""
    system_source: str = ""
    conflicts: tuple[str, ...] = ()
    #: Installed: by the bot, or seen up with its pinned key, or a key recorded for it.
    #: A machine that is not presents another key until it is (``classify``).
    installed: bool = True


@dataclass(frozen=True)
class Location:
    """One look's verdict; ``presented`` is the key that answered (the unknown one for
    ``WRONG_KEY``), ``where`` the address that answered, ``detail`` why nothing did."""

    place: Place
    presented: str = ""
    where: str = ""
    on_initrd_port: bool = False
    detail: str = ""


def same_key(a: str, b: str) -> bool:
    """Whether two public key lines are the same key (comments do not matter)."""
    try:
        ka, kb = parse_public_key(a), parse_public_key(b)
    except ValueError:
        return False
    return (ka.key_type, ka.blob) == (kb.key_type, kb.blob)


def classify(
    pins: Pins,
    *,
    system: str | None,
    initrd: str | None,
    system_where: str = "",
    initrd_where: str = "",
    why: str = "",
) -> Location:
    """Judge what the system port and the initrd port presented (None: nothing answered).

    When both are the same port, pass the one key as ``system`` and ``initrd`` alike.
    """
    if system is not None and pins.system and same_key(system, pins.system):
        return Location(Place.SYSTEM, system, system_where)
    stranger = f"{system_where} answers with another host key ({_fingerprint(system)})"
    shared = system is not None and initrd is not None and system_where == initrd_where
    if initrd is not None and pins.initrd and same_key(initrd, pins.initrd):
        if system is None or shared:
            return Location(Place.INITRD, initrd, initrd_where, on_initrd_port=True)
        # Its initrd's key on one port and a stranger on the system port: not the initrd
        # a NixOS machine runs (its SSH server is gone before the system's starts).
        return Location(Place.WRONG_KEY, system, system_where, detail=stranger)
    if system is not None and pins.installer and same_key(system, pins.installer):
        return Location(Place.INSTALLER, system, system_where)
    if system is not None and not pins.installed:
        return Location(
            Place.INSTALLER, system, system_where, detail=not_installed(_fingerprint(system))
        )
    if system is not None and not shared:
        return Location(Place.WRONG_KEY, system, system_where, detail=stranger)
    if initrd is not None:
        detail = f"{initrd_where} answers with another host key ({_fingerprint(initrd)})"
        return Location(Place.WRONG_KEY, initrd, initrd_where, on_initrd_port=True, detail=detail)
    return Location(Place.NOTHING, detail=why)


def not_installed(presented: str) -> str:
    """Why a machine never installed that presents another key (``presented``, its
    fingerprint) is not alerted about."""
    return (
        f"not installed yet: it answers with {presented}, not its pinned key, as an installer does"
    )


def _fingerprint(key: str | None) -> str:
    try:
        return fingerprint(key or "")
    except ValueError:
        return "an unreadable key"


async def presented_key(host: str, port: int, *, timeout: float) -> tuple[str | None, str]:
    """The host key a port presents, or None and why nothing answered (never raises)."""
    try:
        return await fetch_host_key(host, port, timeout=timeout), ""
    except SshError as exc:
        return None, str(exc)


async def locate(machine: Machine, pins: Pins, *, timeout: float) -> Location:
    """Look at the system port and, for a LUKS machine, the initrd port, at once."""
    system_where = f"{machine.host}:{machine.ssh_port}"
    initrd_where = f"{machine.host}:{machine.initrd_port}"
    if not machine.luks or machine.initrd_port == machine.ssh_port:
        key, why = await presented_key(machine.host, machine.ssh_port, timeout=timeout)
        return classify(
            pins,
            system=key,
            initrd=key if machine.luks else None,
            system_where=system_where,
            initrd_where=system_where,
            why=why,
        )
    (system, why_system), (initrd, why_initrd) = await asyncio.gather(
        presented_key(machine.host, machine.ssh_port, timeout=timeout),
        presented_key(machine.host, machine.initrd_port, timeout=timeout),
    )
    return classify(
        pins,
        system=system,
        initrd=initrd,
        system_where=system_where,
        initrd_where=initrd_where,
        why=why_initrd or why_system,
    )
