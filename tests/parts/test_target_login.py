"""The Target's held login, boot id, reboot from the initrd and port probes, against lab
hosts behind real sshd."""

from __future__ import annotations

import asyncio

import pytest

from bot.config.inventory import Machine
from bot.remote.place import Pins
from bot.remote.ssh import ConnectionDropped, HostKeyMismatch
from bot.remote.target import Reach, RebootFailed, Target
from tests.lab.host import LabHost
from tests.lab.lab import Lab


def luks_target(lab: Lab, host: LabHost, *, initrd_key: str | None = None) -> Target:
    machine = Machine(
        name=host.name,
        host=host.address,
        ssh_port=host.ssh_port,
        initrd_port=host.initrd_port,
        flake_attr="x",
        luks=True,
    )
    key = initrd_key if initrd_key is not None else host.initrd_host_key
    assert key is not None
    assert host.system_host_key is not None
    pins = Pins(system=host.system_host_key, initrd=key)
    return Target(machine, pins, Reach(client_key=lab.operator_key, ssh_timeout=5.0))


async def test_a_held_initrd_login_is_reused_and_made_anew_once_it_died(lab: Lab) -> None:
    host = lab.start_installed_host("held")
    target = luks_target(lab, host)
    login = target.login(initrd=True)
    try:
        conn = await login.open()
        assert await login.open() is conn
        assert await target.boot_id(on=login) == host.boot_id
        assert login.current is conn, "a boot id read over the caller's login leaves it open"
        conn.close()
        await conn.wait_closed()
        again = await login.open()
        assert again is not conn
        assert not again.is_closed()
    finally:
        login.close()
    assert login.current is None


async def test_a_held_login_checks_the_pinned_key_every_time(lab: Lab) -> None:
    host = lab.start_installed_host("pinned")
    target = luks_target(lab, host, initrd_key=lab.operator_public_key)
    login = target.login(initrd=True)
    try:
        with pytest.raises(HostKeyMismatch):
            await login.open()
        with pytest.raises(HostKeyMismatch):  # a failed try is not kept
            await login.open()
    finally:
        login.close()
    assert await target.boot_id(initrd=True) == ""


async def test_a_reboot_from_the_initrd_returns_the_old_boot_id(lab: Lab) -> None:
    host = lab.start_installed_host("again")
    target = luks_target(lab, host)
    first = host.boot_id
    assert await target.ports_open() == (False, True)
    assert await target.reboot(initrd=True) == first
    await host.wait_until(lambda: host.boot_id != first and host.stage == "initrd", 20, "a boot")


async def test_a_reboot_without_a_login_says_so(lab: Lab) -> None:
    host = lab.start_installed_host("locked")
    target = luks_target(lab, host, initrd_key=lab.operator_public_key)
    with pytest.raises(RebootFailed, match="cannot log in"):
        await target.reboot(initrd=True)
    assert host.stage == "initrd"


async def test_a_login_closed_while_it_is_made_fails_its_waiter_and_is_not_kept(lab: Lab) -> None:
    """close() during the handshake: the waiter hears the login was closed (it was not
    cancelled itself), and nothing stays open."""
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    machine = Machine(name="mute", host="127.0.0.1", ssh_port=port, flake_attr="x", luks=False)
    reach = Reach(client_key=lab.operator_key, ssh_timeout=30.0)
    login = Target(machine, Pins(system=lab.operator_public_key), reach).login()
    try:
        opening = asyncio.ensure_future(login.open())
        await asyncio.wait_for(accepted.wait(), 10)
        login.close()
        with pytest.raises(ConnectionDropped, match="closed"):
            await asyncio.wait_for(opening, 10)
        assert login.current is None
    finally:
        login.close()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
