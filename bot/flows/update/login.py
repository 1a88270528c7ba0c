"""The login a confirmation must use: one made after the activation.

The steps before the activation share one held login (``Target.login()``, made while it
builds); only a login made after the activation proves the new system lets the bot in
(``docs/updates.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bot.remote.shell import RemoteShell
from bot.remote.target import Target


@contextlib.asynccontextmanager
async def fresh_shell(target: Target) -> AsyncIterator[RemoteShell]:
    """A shell on a login made now (closed after)."""
    login = target.login()
    try:
        yield await login.shell_here(await login.open())
    finally:
        login.close()
