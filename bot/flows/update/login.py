"""The login an update's steps share until the activation, opened while it builds.

Reading the machine, the review's facts, selecting the generation, arming the guard and
starting the activation all go through one pinned login and one shell kept on it: one
handshake, made during the build and the copy, and no process started per step. The
confirmation afterwards never uses it: only a login made after the activation proves the
new system lets the bot in (``docs/updates.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncssh

from bot.remote.shell import RemoteShell
from bot.remote.ssh import ConnectionDropped, SshError
from bot.remote.target import Target


class Login:
    """A pinned login to ``target`` and a shell on it, opened ahead of its first use."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._opening: asyncio.Task[tuple[asyncssh.SSHClientConnection, RemoteShell]] | None
        self._opening = None

    def start(self) -> None:
        """Begin logging in, in the background (a failure is told at the first use)."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())

    async def shell(self) -> RemoteShell:
        """The kept shell; logged in anew when the first try failed or the shell has ended
        since (a review can take minutes). SshError when that fails too."""
        with contextlib.suppress(SshError):
            shell = await self._opened()
            if shell.alive:
                return shell
        self.close()
        return await self._opened()

    async def _opened(self) -> RemoteShell:
        self.start()
        assert self._opening is not None
        _, shell = await asyncio.shield(self._opening)  # a cancelled step leaves it to close()
        return shell

    def close(self) -> None:
        """End the login (also one still being made)."""
        task, self._opening = self._opening, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            task.add_done_callback(_close_result)
            return
        _close_result(task)

    async def _open(self) -> tuple[asyncssh.SSHClientConnection, RemoteShell]:
        conn = await self.target.system()
        try:
            return conn, await _shell_on(self.target, conn)
        except BaseException:
            conn.close()
            raise


def _close_result(task: asyncio.Task[tuple[asyncssh.SSHClientConnection, RemoteShell]]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    conn, shell = task.result()
    shell.close()
    with contextlib.suppress(Exception):
        conn.close()


@contextlib.asynccontextmanager
async def fresh_shell(target: Target) -> AsyncIterator[RemoteShell]:
    """A shell on a login made now (closed after): what a confirmation must use."""
    conn = await target.system()
    try:
        shell = await _shell_on(target, conn)
        try:
            yield shell
        finally:
            shell.close()
    finally:
        conn.close()


async def _shell_on(target: Target, conn: asyncssh.SSHClientConnection) -> RemoteShell:
    try:
        return await RemoteShell.open(conn)
    except (asyncssh.Error, OSError) as exc:
        raise ConnectionDropped(f"{target.name} refused a shell: {exc}") from None
