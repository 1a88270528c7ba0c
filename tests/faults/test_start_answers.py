"""A fresh ``deploybot run`` answers people at once, whatever its start-up work still does.

300 machines, none reachable (most refuse connections, some accept and never say a word),
each with its host key in sops: resolving their keys at start takes one ``sops decrypt``
each. Here sops does not answer until the test lets it, so the order of events is plain:
the bot must answer a command while every one of those reads is still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bot.core.keys import public_from_private
from bot.remote.pins import SOPS_AT_ONCE
from tests.botprocess import BotProcess
from tests.lab.sops import make_sops_secrets
from tests.waiting import eventually
from tests.world import World

MACHINES = 300
SILENT = 60  # of them accept TCP and never answer


@pytest_asyncio.fixture
async def silent_hosts() -> AsyncIterator[list[tuple[str, int]]]:
    """Loopback addresses that accept a connection and then say nothing, ever."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    servers = [
        await asyncio.start_server(hold, f"127.0.2.{i + 1}", 0, reuse_address=True)
        for i in range(SILENT)
    ]
    try:
        yield [s.sockets[0].getsockname()[:2] for s in servers]
    finally:
        for writer in held:
            writer.close()
        for server in servers:
            server.close()
            await server.wait_closed()


class GatedSops:
    """The real sops behind a gate: each read waits until ``open()``, and is counted."""

    def __init__(self, directory: Path, real: str) -> None:
        self.gate = directory / "gate"
        self.log = directory / "reads"
        self.path = directory / "sops"
        self.path.write_text(
            "#!/bin/sh\n"
            f"echo started >> '{self.log}'\n"
            f"while [ ! -e '{self.gate}' ]; do sleep 0.05; done\n"
            f"'{real}' \"$@\"\nrc=$?\n"
            f"echo finished >> '{self.log}'\n"
            "exit $rc\n"
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    def count(self, what: str) -> int:
        if not self.log.exists():
            return 0
        return self.log.read_text().split().count(what)

    def open(self) -> None:
        self.gate.touch()


def fleet_of(
    world: World, silent_hosts: list[tuple[str, int]], *, probe_interval: str = "60s"
) -> GatedSops:
    """The inventory of MACHINES unreachable machines, each with its host key in sops, and
    one more (``plain``) whose key is in the inventory; sops behind a gate."""
    directory = world.root / "fleet"
    directory.mkdir()
    secrets = make_sops_secrets(
        directory, {f"key{i}": world.host_private_key for i in range(MACHINES)}
    )
    sops = GatedSops(directory, secrets.sops)
    world.rig.env.update(
        {"DEPLOYBOT_SOPS": str(sops.path), "SOPS_AGE_KEY_FILE": str(secrets.age_key_file)}
    )
    every = f'probe_interval = "{probe_interval}"\n'
    entries = []
    for i in range(MACHINES):
        # Port 1 on 127.0.1.x: nothing listens there, connections are refused.
        host, port = silent_hosts[i] if i < SILENT else (f"127.0.1.{i % 250 + 1}", 1 + i // 250)
        entries.append(
            f'[machines.m{i:03d}]\nhost = "{host}"\nssh_port = {port}\n'
            f"initrd_port = {port}\nluks = true\n{every}"
            f'secrets_file = "{secrets.path}"\nhost_key_secret = "key{i}"\n'
        )
    key = public_from_private(world.host_private_key, comment="")
    entries.append(
        f'[machines.plain]\nhost = "127.0.3.1"\nssh_port = 1\n{every}host_key = "{key}"\n'
    )
    world.rig.write_inventory("\n".join(entries))
    return sops


async def test_the_first_command_is_answered_while_start_up_reads_sops(
    world: World, bot_process: BotProcess, silent_hosts: list[tuple[str, int]]
) -> None:
    tg = world.rig.tg
    sops = fleet_of(world, silent_hosts)

    await bot_process.start(ready="getMe")
    await tg.send_text(world.admin, "/whoami")
    answer = await tg.wait_for_message(world.admin, lambda m: True, timeout=30)
    assert answer.body.startswith(f"You are {world.admin.id}")
    # The start-up work is under way and not one of its reads has finished.
    assert sops.count("started") >= 1
    assert sops.count("finished") == 0

    sops.open()

    async def resolved() -> bool:
        return sops.count("finished") >= MACHINES

    await eventually(resolved, timeout=180, interval=0.2, what="every key resolved")
    await tg.send_text(world.admin, "/machines")
    listed = await tg.wait_for_message(world.admin, lambda m: "Machines" in m.body, timeout=30)
    assert f"Machines ({MACHINES + 1})" in listed.body
    assert not any("contradict" in m.body for m in tg.bot_messages(world.admin))


def probes_of(db: Path, machine: str) -> int:
    """How many probes the running bot has counted for ``machine`` (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            row = conn.execute(
                "select sum(probes) from probe_hours where machine = ?", [machine]
            ).fetchone()
        except sqlite3.OperationalError:  # not created yet
            return 0
    return int(row[0] or 0)


async def test_the_first_probes_of_a_fleet_start_a_bounded_number_of_sops(
    world: World, bot_process: BotProcess, silent_hosts: list[tuple[str, int]]
) -> None:
    """Every machine's first probe needs its key, from sops: a thousand sops processes at
    once would leave the bot's loop nothing for the chat (bot.remote.pins)."""
    tg = world.rig.tg
    sops = fleet_of(world, silent_hosts, probe_interval="1s")
    await bot_process.start()
    db = world.rig.settings.db

    async def two_rounds() -> bool:
        # plain's probes need no sops: two of them, and every machine's first has fired.
        return await asyncio.to_thread(probes_of, db, "plain") >= 2

    await eventually(two_rounds, timeout=30, interval=0.1, what="two probe rounds")
    await tg.send_text(world.admin, "/whoami")
    answer = await tg.wait_for_message(world.admin, lambda m: True, timeout=30)
    assert answer.body.startswith(f"You are {world.admin.id}")
    assert 1 <= sops.count("started") <= SOPS_AT_ONCE
    sops.open()

    async def resolved() -> bool:
        return sops.count("finished") >= MACHINES

    await eventually(resolved, timeout=180, interval=0.2, what="every key resolved")
    assert sops.count("started") == MACHINES  # one read per key, cached afterwards
