"""Several commands over one SSH login, each answered apart.

A channel per command costs a round trip to open it and a process on the machine to start
it; a script of several commands costs one. The commands run in turn, each followed by a
marker (``tag i status`` on stdout, ``tag i`` on stderr) with a tag chosen afresh for each
script, so the answers come apart again; the parsing is strict, and an answer that does not
split exactly (a command printing a marker it cannot know, output cut short) is not
believed. A script runs either in one exec (:func:`run_script`) or as one line written to a
shell kept open on the login (:class:`RemoteShell`), which then answers the next script
without starting anything at all.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
from collections.abc import Sequence

import asyncssh

from bot.remote.ssh import CommandResult, ConnectionDropped, run

#: argv, quoted for the remote shell, or shell text already (``a && echo OK``).
Command = Sequence[str] | str
# What one command of a script may say: more is dropped, never parsed.
SECTION_MAX = 16 * 1024
# What a kept shell may answer to one script before it is given up on.
SESSION_MAX = 256 * 1024


class ShellFailed(ConnectionDropped):
    """The kept shell went wrong (no answer in time, too much, markers out of place); it
    is closed, and ``timed_out`` says whether the login itself may be dead."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def new_tag() -> str:
    return f"--deploybot-{secrets.token_hex(8)}--"


def script(commands: Sequence[Command], tag: str) -> str:
    """One line running ``commands`` in turn, each followed by its markers."""
    return "; ".join(
        f'{c if isinstance(c, str) else shlex.join(c)}; echo "{tag} {i} $?"; echo "{tag} {i}" >&2'
        for i, c in enumerate(commands)
    )


def split_output(
    stdout: bytes, stderr: bytes, tag: str, count: int, *, section_max: int = SECTION_MAX
) -> list[CommandResult] | None:
    """Each command's result from the script's output; None unless every section is there,
    in order, and nothing follows the last."""
    marker = tag.encode() + b" "
    outs, errs = stdout.split(marker), stderr.split(marker)
    if len(outs) != count + 1 or len(errs) != count + 1:
        return None
    results = []
    out, err = outs[0], errs[0]
    for i in range(count):
        out_head, out_end, out_next = outs[i + 1].partition(b"\n")
        err_head, err_end, err_next = errs[i + 1].partition(b"\n")
        number, _, status = out_head.partition(b" ")
        if (
            not out_end
            or not err_end
            or number != str(i).encode()
            or err_head != number
            or not status.isdigit()
            or len(status) > 3
            or int(status) > 255
        ):
            return None
        results.append(CommandResult(int(status), out[:section_max], err[:section_max]))
        out, err = out_next, err_next
    if out or err:
        return None
    return results


async def run_script(
    conn: asyncssh.SSHClientConnection,
    commands: Sequence[Command],
    *,
    timeout: float,
    section_max: int = SECTION_MAX,
) -> list[CommandResult] | None:
    """``commands`` in one exec (``sh -c``); None when the answer does not split."""
    tag = new_tag()
    result = await run(conn, ["sh", "-c", script(commands, tag)], timeout=timeout)
    return split_output(result.stdout, result.stderr, tag, len(commands), section_max=section_max)


class RemoteShell:
    """A shell (``sh -s``) kept open on a login: each script is one line written to it.

    Whatever the machine writes between scripts waits on its side (a small window). A
    command must not read its standard input, which is the shell's own: give it
    ``</dev/null``. Anything unexpected ends the shell (:class:`ShellFailed`).
    """

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.process = process

    @classmethod
    async def open(cls, conn: asyncssh.SSHClientConnection) -> RemoteShell:
        process = await conn.create_process("sh -s", encoding=None, window=SESSION_MAX)
        return cls(process)

    @property
    def alive(self) -> bool:
        return not self.process.is_closing() and self.process.exit_status is None

    def close(self) -> None:
        self.process.close()

    async def run(
        self, commands: Sequence[Command], *, timeout: float, section_max: int = SECTION_MAX
    ) -> list[CommandResult]:
        """The commands' results; ShellFailed (and the shell closed) when it went wrong."""
        if not self.alive:
            raise ShellFailed("the kept shell has ended")
        tag = new_tag()
        count = len(commands)
        try:
            self.process.stdin.write(script(commands, tag).encode() + b"\n")
            async with asyncio.timeout(timeout):
                out, err = await asyncio.gather(
                    _read_until(self.process.stdout, f"{tag} {count - 1} ".encode(), True),
                    _read_until(self.process.stderr, f"{tag} {count - 1}\n".encode(), False),
                )
        except TimeoutError:
            self.close()
            raise ShellFailed(
                f"the shell did not answer within {timeout:g} s", timed_out=True
            ) from None
        except _TooMuch:
            self.close()
            raise ShellFailed(f"the shell said more than {SESSION_MAX} bytes") from None
        except (OSError, asyncssh.Error) as exc:
            self.close()
            raise ShellFailed(f"the shell ended: {exc}") from None
        results = split_output(out, err, tag, count, section_max=section_max)
        if results is None:
            self.close()
            raise ShellFailed("the shell's answer did not split into its commands")
        return results


class _TooMuch(Exception):
    pass


async def _read_until(stream: asyncssh.SSHReader[bytes], end: bytes, line_after: bool) -> bytes:
    """Read until ``end`` (and, with ``line_after``, the rest of its line), at most
    ``SESSION_MAX`` bytes; the stream closing first is an error."""
    data = b""
    while True:
        at = data.find(end)
        if at >= 0 and (not line_after or data.find(b"\n", at + len(end)) >= 0):
            return data
        if len(data) > SESSION_MAX:
            raise _TooMuch
        chunk = await stream.read(65536)
        if not chunk:
            raise BrokenPipeError("the shell closed its output")
        data += chunk
