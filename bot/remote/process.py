"""Running a long child (nix, nixos-anywhere): its own process group, a secret through a
pipe, its output line by line with bounded memory and redacted, and a stop that reaches the
whole group (SIGTERM, a grace, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.core.secret import Redactor, Secret

MAX_LINE = 4096
KILL_GRACE = 5.0
DRAIN_TIMEOUT = 5.0
_CHUNK = 65536


class ProcessError(Exception):
    """The child could not be started or run."""


class ProcessTimeout(ProcessError, TimeoutError):
    """It ran longer than allowed; its whole process group was stopped."""


class ProcessStopped(ProcessError):
    """The caller stopped it (a stalled step, a changed host key); the group was stopped.

    Raise it from ``on_line`` or return a reason from ``check`` to stop the run.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


LineCallback = Callable[[str], Awaitable[None]] | Callable[[str], None]
# Polled about once a second while it runs: a reason to stop it, or None.
Check = Callable[[], str | None]


@dataclass(frozen=True)
class Child:
    """What is started: ``name`` and ``setting`` only word the errors (``nix build``,
    ``DEPLOYBOT_NIX``)."""

    argv: Sequence[str]
    name: str
    setting: str


async def run_process(
    child: Child,
    *,
    on_line: LineCallback,
    env: Mapping[str, str] | None,
    timeout: float,
    cwd: Path | None = None,
    secret: Secret | None = None,
    secret_slot: str | None = None,
    redact_also: Iterable[Secret] = (),
    max_line: int = MAX_LINE,
    kill_grace: float = KILL_GRACE,
    drain_timeout: float = DRAIN_TIMEOUT,
    check: Check | None = None,
    check_interval: float = 1.0,
) -> int:
    """Run ``child`` in its own process group and return its exit status.

    With ``secret``, the one argv word equal to ``secret_slot`` becomes ``/dev/fd/N``, the
    read end of a pipe that holds the secret (written verbatim, no newline added).
    ``env=None`` inherits the bot's whole environment: pass ``bot.remote.nix.child_env()``.
    stdout and stderr are merged, read line by line, capped at ``max_line`` characters,
    redacted and handed to ``on_line``. Cancellation, the timeout, ``on_line`` raising
    :class:`ProcessStopped` or ``check`` returning a reason stop the whole group: SIGTERM
    (nixos-anywhere's EXIT trap then removes its copy of the SSH key), then SIGKILL after
    ``kill_grace`` seconds.
    """
    args, name = list(child.argv), child.name
    if not args or any(not isinstance(word, str) or not word for word in args):
        raise ValueError(f"{child.setting} is empty")
    secrets = [s for s in (secret, *redact_also) if s is not None]
    slots = [i for i, a in enumerate(args) if secret_slot is not None and a == secret_slot]
    if secret is not None and len(slots) != 1:
        raise ValueError(f"argv must contain {secret_slot} exactly once to pass the disk key")
    if secret is None and slots:
        raise ValueError(f"argv names {secret_slot} but no disk key was given")
    read_fd: int | None = None
    write_fd: int | None = None
    if secret is not None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        args[slots[0]] = f"/dev/fd/{read_fd}"
    out_read, out_write = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_write,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            pass_fds=(read_fd,) if read_fd is not None else (),
        )
    except BaseException as exc:
        for fd in (write_fd, out_read):
            if fd is not None:
                os.close(fd)
        if isinstance(exc, OSError):
            raise ProcessError(
                f"cannot start {args[0]!r}: {exc.strerror or exc}; check {child.setting}"
            ) from None
        raise
    finally:
        for fd in (read_fd, out_write):
            if fd is not None:
                os.close(fd)

    # The output pipe is ours, not the subprocess transport's: proc.wait() then returns
    # when the leader exits even if a stray grandchild still holds the pipe open.
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader(limit=_CHUNK, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream, loop=loop),
        os.fdopen(out_read, "rb", buffering=0),
    )
    feeder = None
    if secret is not None and write_fd is not None:
        feeder = asyncio.create_task(_feed(write_fd, secret.reveal()))
    reader = asyncio.create_task(_pump(stream, on_line, secrets, max_line))
    waiter = asyncio.create_task(proc.wait())
    watcher = asyncio.create_task(_watch(check, check_interval)) if check is not None else None
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            racing = {reader, waiter} | ({watcher} if watcher is not None else set())
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            if watcher is not None and watcher.done():
                watcher.result()
            if reader.done():
                reader.result()
            code = await waiter
            await _drain(reader, proc.pid, drain_timeout)
        return code
    except TimeoutError:
        if deadline.expired():
            await _stop_group(proc, kill_grace)
            raise ProcessTimeout(
                f"{name} did not finish within {timeout:g} s and was stopped"
            ) from None
        raise
    except ProcessStopped:
        await _stop_group(proc, kill_grace)
        raise
    finally:
        if proc.returncode is None:
            await _stop_group(proc, kill_grace)
        tasks = [t for t in (reader, waiter, feeder, watcher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        transport.close()


async def _watch(check: Check, interval: float) -> None:
    """Raise ProcessStopped as soon as ``check`` gives a reason."""
    while True:
        reason = check()
        if reason is not None:
            raise ProcessStopped(reason)
        await asyncio.sleep(interval)


async def _feed(fd: int, data: bytes) -> None:
    """Write ``data`` into the non-blocking pipe without blocking the loop, then close it."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    try:
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_writer(fd, _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_writer(fd)
                continue
            except BrokenPipeError:
                return
            view = view[written:]
    finally:
        view.release()
        del data
        os.close(fd)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _pump(
    stream: asyncio.StreamReader,
    on_line: LineCallback,
    secrets: Sequence[Secret],
    max_line: int,
) -> None:
    """Split the stream into lines with bounded memory and deliver them redacted."""
    scrub = Redactor(secrets)
    longest = max((len(s) for s in secrets), default=0)
    window = 4 * max_line + longest  # a secret starting inside the shown part is redacted
    buf = bytearray()
    dropped = 0

    async def emit() -> None:
        text = scrub(buf.decode("utf-8", errors="replace")).rstrip("\r")
        extra = dropped
        if len(text) > max_line:
            extra += len(text[max_line:].encode("utf-8"))
            text = text[:max_line]
        if extra:
            text += f" …[{extra} bytes cut]"
        result = on_line(text)
        if inspect.isawaitable(result):
            await result

    while True:
        chunk = await stream.read(_CHUNK)
        if not chunk:
            break
        start = 0
        while start <= len(chunk):
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            room = max(0, window - len(buf))
            buf += piece[:room]
            dropped += len(piece) - min(len(piece), room)
            if end < 0:
                break
            await emit()
            buf.clear()
            dropped = 0
            start = end + 1
    if buf or dropped:
        await emit()


async def _drain(reader: asyncio.Task[None], pgid: int, patience: float) -> None:
    """After the leader exits, wait for the output to end; kill leftovers holding the pipe."""
    if reader.done():
        reader.result()
        return
    done, _ = await asyncio.wait({reader}, timeout=patience)
    if not done:
        _signal_group(pgid, signal.SIGKILL)
        done, _ = await asyncio.wait({reader}, timeout=patience)
    if done:
        reader.result()


async def _stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the whole group, SIGKILL what is left after ``grace``, reap the leader.

    The grace lets nixos-anywhere's EXIT trap run (it removes its copy of the key); SIGKILL
    would skip it.
    """
    _signal_group(proc.pid, signal.SIGTERM)
    waiter = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait({waiter}, timeout=grace)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
    await waiter


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
