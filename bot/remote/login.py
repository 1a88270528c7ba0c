"""A pinned login held for a while: opened at first use (or ahead of it, in the background),
opened anew when it has died, with at most one shell (``sh -s``) kept on it.

A Target hands these out (:meth:`~bot.remote.target.Target.login`) and holds one to the
booted system between probes. A login of the caller's own is the caller's to close; a
login being made when it is closed is closed as soon as it is made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncssh

from bot.remote.shell import RemoteShell
from bot.remote.ssh import ConnectionDropped, SshError

Opener = Callable[[], Awaitable[asyncssh.SSHClientConnection]]


class Login:
    """One pinned login, made by ``opener`` (which checks the pinned host key)."""

    def __init__(self, opener: Opener, name: str) -> None:
        self._opener = opener
        self.name = name
        self._task: asyncio.Task[asyncssh.SSHClientConnection] | None = None
        self._shell: RemoteShell | None = None
        self._shell_conn: asyncssh.SSHClientConnection | None = None
        # The connection that refused a shell (or answered one wrongly): execs only there.
        self._exec_only: asyncssh.SSHClientConnection | None = None

    def start(self) -> None:
        """Begin logging in in the background; a failure is told at the first use."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._opener())

    @property
    def current(self) -> asyncssh.SSHClientConnection | None:
        """The connection when it is made and still open."""
        task = self._task
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        conn = task.result()
        return None if conn.is_closed() else conn

    @property
    def connected(self) -> bool:
        return self.current is not None

    async def open(self) -> asyncssh.SSHClientConnection:
        """The open connection: the one made (or being made), else a new one when none was
        tried, the last try failed or it has closed since. SshError when logging in fails."""
        task = self._task
        if task is not None and task.done() and self.current is None:
            self.close()
        self.start()
        task = self._task
        assert task is not None
        try:
            return await asyncio.shield(task)  # a cancelled caller leaves it to close()
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if task.cancelled() and (caller is None or not caller.cancelling()):
                # close() ended the login while it was made; the caller was not cancelled.
                raise ConnectionDropped(f"the login to {self.name} was closed") from None
            raise

    async def shell(self) -> RemoteShell:
        """The shell kept on the login; logged in anew once when the login or its shell
        has ended (or the first try failed). SshError when that fails too."""
        with contextlib.suppress(SshError):
            return await self.shell_here(await self.open())
        self.close()
        return await self.shell_here(await self.open())

    @property
    def takes_shell(self) -> bool:
        """False once the open connection refused a shell or answered one wrongly."""
        conn = self.current
        return conn is not None and conn is not self._exec_only

    async def shell_here(self, conn: asyncssh.SSHClientConnection) -> RemoteShell:
        """The shell on ``conn`` (this login's connection), opened at first use;
        ConnectionDropped when the machine refuses one (execs only on it from then on)."""
        shell = self._shell
        if shell is not None and shell.alive and self._shell_conn is conn:
            return shell
        if conn is self._exec_only:
            raise ConnectionDropped(f"{self.name} refused a shell")
        if shell is not None:
            shell.close()
        try:
            self._shell, self._shell_conn = await RemoteShell.open(conn), conn
        except (asyncssh.Error, OSError) as exc:
            self._shell, self._exec_only = None, conn
            raise ConnectionDropped(f"{self.name} refused a shell: {exc}") from None
        return self._shell

    def exec_only(self) -> None:
        """Use no shell on the open connection again (it answered one wrongly)."""
        shell, self._shell = self._shell, None
        if shell is not None:
            shell.close()
        self._exec_only = self.current

    def close(self) -> None:
        """End the login (also one still being made) and its shell."""
        task, self._task = self._task, None
        shell, self._shell = self._shell, None
        self._exec_only = None
        if shell is not None:
            shell.close()
        if task is None:
            return
        if not task.done():
            task.cancel()
            task.add_done_callback(_close_made)
            return
        _close_made(task)


def _close_made(task: asyncio.Task[asyncssh.SSHClientConnection]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    with contextlib.suppress(Exception):
        task.result().close()
