"""An operator of one machine tries to erase another operator's machine through /deploy.

Each attack ends with nothing run on the victim and a message naming both machines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bot.core.keys import fingerprint
from tests.people import OPERATOR, OTHER_OPERATOR
from tests.world import World


class Relay:
    """A TCP port that forwards to ``(host, port)`` and counts connections: the attacker's
    name for the victim (a DNAT, a proxy, a DNS name) as the lab can build one."""

    def __init__(self, host: str | None, port: int | None) -> None:
        self.to = (host, port)
        self.connections = 0
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        host, port = self.to
        if host is None or port is None:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(host, port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@contextlib.asynccontextmanager
async def relay(host: str | None = None, port: int | None = None) -> AsyncIterator[Relay]:
    r = Relay(host, port)
    r.server = await asyncio.start_server(r._serve, "127.0.0.1", 0)
    try:
        yield r
    finally:
        r.server.close()


async def test_a_target_presenting_another_machines_pinned_key_is_not_erased(
    world: World,
) -> None:
    victim = world.lab.start_host("victim", stage="booted", luks=False)
    async with relay(victim.address, victim.ssh_port) as proxy:
        world.machine("victim", victim, luks=False, operators=[OTHER_OPERATOR])
        world.machine(
            "evil",
            victim,
            host="127.0.0.1",
            luks=False,
            ssh_port=proxy.port,
            flake_attr="clawsiecats",
            operators=[OPERATOR],
        )
        await world.start()
        await world.pin("victim", victim, initrd=False)
        op, tg = world.op, world.rig.tg
        await tg.send_text(op, "/deploy evil")
        end = await world.job_end(op)
        assert "— failed after" in end.body, end.body
        assert "the pinned system key of machine victim" in end.body, end.body
        assert "that is victim, not evil" in end.body
        assert fingerprint(victim.system_host_key or "") in end.body
        # Nothing was asked, logged into or run: one key scan went through, no login.
        assert not any(m.buttons for m in tg.bot_messages(op))
        assert proxy.connections == 1
        assert victim.stage == "booted"
        assert not world.stand_ins()
        audit = await world.rig.svc.store.recent_audit(20)
        assert not [e for e in audit if e.decision == "confirmed"]


async def test_a_host_name_that_resolves_to_another_machine_is_never_contacted(
    world: World,
) -> None:
    async with relay() as victim:
        # The victim answers on 127.0.0.1; the attacker names it "localhost".
        host = world.lab.start_host("unused", luks=False)
        world.machine(
            "victim",
            host,
            luks=False,
            host="127.0.0.1",
            ssh_port=victim.port,
            operators=[OTHER_OPERATOR],
        )
        world.machine(
            "evil",
            host,
            luks=False,
            host="localhost",
            ssh_port=victim.port,
            flake_attr="clawsiecats",
            operators=[OPERATOR],
        )
        await world.start()
        op = world.op
        await world.rig.tg.send_text(op, "/deploy evil")
        end = await world.job_end(op)
        assert "— failed after" in end.body, end.body
        assert (
            f"localhost:{victim.port} is 127.0.0.1:{victim.port}, the address of machine victim"
            in end.body
        )
        assert "refusing to touch victim as evil" in end.body, end.body
        assert victim.connections == 0
