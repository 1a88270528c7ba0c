"""The bot's own SSH connections, always against a pinned host key.

The bot types LUKS passphrases into these connections, so a connection is only made when
the server proves it holds the pinned key; nothing is read from ~/.ssh (no known_hosts, no
config, no agent). Failures become a small exception hierarchy whose messages tell the
operator what to do and never carry secrets. :func:`fetch_host_key` is the single
trust-on-first-use path: its result must be shown to a person before it is pinned.
"""

from __future__ import annotations

import asyncio
import errno
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from bot.core.keys import ED25519, PublicKey, parse_public_key

__all__ = [
    "AuthRefused",
    "ClientKeyError",
    "CommandResult",
    "CommandTimeout",
    "ConnectionDropped",
    "HostKeyMismatch",
    "NoPinnedKey",
    "SshEndpoint",
    "SshError",
    "Unreachable",
    "connect",
    "fetch_host_key",
    "probe_tcp",
    "run",
]

KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 3
_REASON_MAX = 200


@dataclass(frozen=True)
class SshEndpoint:
    """Where and as whom to log in, and the host key the server must present."""

    host: str
    port: int
    user: str
    client_key: Path
    host_key: str | None

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    """A finished remote command. ``exit_status`` is negative (-signal) if it was killed."""

    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


class SshError(Exception):
    """Base of every SSH failure reported by this module."""


class NoPinnedKey(SshError):
    """The endpoint has no host key to verify against: refuse rather than trust blindly."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"no pinned host key for {where}: refusing to connect. Set the machine's host key "
            "(initrd_host_key, or install it with the bot so the key is recorded)"
        )


class HostKeyMismatch(SshError):
    """The server presented a key other than the pinned one."""

    def __init__(self, where: str, expected_fingerprint: str, actual_fingerprint: str) -> None:
        self.expected_fingerprint = expected_fingerprint
        self.actual_fingerprint = actual_fingerprint
        super().__init__(
            f"host key of {where} does not match: pinned {expected_fingerprint}, server "
            f"presented {actual_fingerprint}. If the machine was reinstalled, update its pinned "
            "key; otherwise the connection may be intercepted: do not send passphrases"
        )


class AuthRefused(SshError):
    """The server refused the bot's client key."""


class Unreachable(SshError):
    """Nothing answered: refused, timed out, no route, or the name does not resolve."""


class ConnectionDropped(SshError):
    """The connection broke after it was established (or during login)."""


class CommandTimeout(SshError):
    """A remote command did not finish in time; its channel was closed."""


class ClientKeyError(SshError):
    """The bot's own private key cannot be read or used."""


async def connect(
    endpoint: SshEndpoint,
    *,
    timeout: float,
    keepalive_interval: float = KEEPALIVE_INTERVAL,
) -> asyncssh.SSHClientConnection:
    """Open a connection that only succeeds if the server holds the pinned host key."""
    where = str(endpoint)
    if not endpoint.host_key or not endpoint.host_key.strip():
        raise NoPinnedKey(where)
    try:
        pinned = parse_public_key(endpoint.host_key)
    except ValueError as exc:
        raise SshError(f"pinned host key for {where} is invalid: {exc}") from None
    client_key = await _load_client_key(endpoint.client_key)
    trusted = asyncssh.import_public_key(pinned.line(with_comment=False))
    try:
        async with asyncio.timeout(timeout):
            return await asyncssh.connect(
                endpoint.host,
                endpoint.port,
                username=endpoint.user,
                client_keys=[client_key],
                known_hosts=([trusted], [], []),
                server_host_key_algs=_host_key_algs(pinned.key_type),
                config=[],
                agent_path=None,
                agent_forwarding=False,
                password_auth=False,
                kbdint_auth=False,
                host_based_auth=False,
                gss_host=None,
                connect_timeout=timeout,
                login_timeout=timeout,
                keepalive_interval=keepalive_interval,
                keepalive_count_max=KEEPALIVE_COUNT_MAX,
            )
    except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed) as exc:
        actual = await _presented_fingerprint(endpoint.host, endpoint.port, pinned, timeout)
        if actual == pinned.fingerprint or (
            actual is None and isinstance(exc, asyncssh.KeyExchangeFailed)
        ):
            raise SshError(f"key exchange with {where} failed: {_reason(exc)}") from None
        raise HostKeyMismatch(where, pinned.fingerprint, actual or "unknown") from None
    except asyncssh.PermissionDenied:
        raise AuthRefused(
            f"{where} refused the bot's key {endpoint.client_key}: add its public key to "
            f"{endpoint.user}'s authorized keys on the machine"
        ) from None
    except asyncssh.DisconnectError as exc:
        raise ConnectionDropped(
            f"{where} closed the connection during login: {_reason(exc)}"
        ) from None
    except TimeoutError:
        raise Unreachable(
            f"{where} did not answer within {timeout:g} s: is it up and is the port open?"
        ) from None
    except OSError as exc:
        raise Unreachable(_unreachable_message(where, exc)) from None


async def fetch_host_key(host: str, port: int, *, timeout: float) -> str:
    """Trust on first use: return the server's ed25519 public-key line, unverified.

    Only for a fresh installer whose key is then shown to a person and pinned.
    """
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            key = await asyncssh.get_server_host_key(
                host, port, server_host_key_algs=[ED25519], config=[]
            )
    except asyncssh.KeyExchangeFailed:
        raise SshError(f"{where} offers no ed25519 host key") from None
    except asyncssh.DisconnectError as exc:
        raise ConnectionDropped(f"{where} closed the connection: {_reason(exc)}") from None
    except TimeoutError:
        raise Unreachable(f"{where} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise Unreachable(_unreachable_message(where, exc)) from None
    if key is None:
        raise SshError(f"{where} presented no host key")
    return _key_line(key)


# What one remote command may send back, per stream. A target is hostile input: a 200 MB
# /etc/os-release must not take the bot's memory (or its database) with it.
MAX_OUTPUT = 1 << 20
CUT_MARK = b"\n[... output cut: the target sent more than %d bytes; the command was stopped]\n"


async def _read_bounded(stream: asyncssh.SSHReader[bytes], limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of ``stream``, and whether it had more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return b"".join(chunks), False
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)


async def _read_both(
    process: asyncssh.SSHClientProcess[bytes], limit: int
) -> tuple[tuple[bytes, bool], tuple[bytes, bool]]:
    """Both streams, bounded; the first one past ``limit`` ends the other's read at once."""
    out = asyncio.ensure_future(_read_bounded(process.stdout, limit))
    err = asyncio.ensure_future(_read_bounded(process.stderr, limit))
    try:
        pending = {out, err}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(task.result()[1] for task in done):
                for task in pending:
                    task.cancel()
                break
        return (
            out.result() if out.done() and not out.cancelled() else (b"", False),
            err.result() if err.done() and not err.cancelled() else (b"", False),
        )
    finally:
        for task in (out, err):
            task.cancel()


async def run(
    conn: asyncssh.SSHClientConnection,
    argv: list[str],
    *,
    input: bytes | None = None,
    timeout: float,
    max_output: int = MAX_OUTPUT,
) -> CommandResult:
    """Run ``argv`` (quoted for the remote shell); secrets go in ``input``, never in argv.

    At most ``max_output`` bytes of each stream are kept: past that the channel is closed
    (the remote command is stopped), the output ends with a line saying so, and the
    result counts as failed (exit status -1).
    """
    if not argv:
        raise ValueError("argv is empty")
    command = shlex.join(argv)
    name = argv[0]
    try:
        if not input:
            process = await conn.create_process(command, encoding=None, stdin=asyncssh.DEVNULL)
        else:
            process = await conn.create_process(command, encoding=None, input=input)
        try:
            async with asyncio.timeout(timeout):
                (stdout, out_cut), (stderr, err_cut) = await _read_both(process, max_output)
                if out_cut or err_cut:
                    process.close()
                    mark = CUT_MARK % max_output
                    return CommandResult(
                        exit_status=-1,
                        stdout=stdout + (mark if out_cut else b""),
                        stderr=stderr + (mark if err_cut else b""),
                    )
                await process.wait_closed()
        except TimeoutError:
            process.close()
            raise CommandTimeout(f"remote {name!r} did not finish within {timeout:g} s") from None
    except asyncssh.ChannelOpenError as exc:
        raise ConnectionDropped(f"could not start remote {name!r}: {_reason(exc)}") from None
    except (asyncssh.DisconnectError, BrokenPipeError, ConnectionError) as exc:
        raise ConnectionDropped(f"connection lost while running {name!r}: {_reason(exc)}") from None
    if process.exit_status is None and process.exit_signal is None:
        raise ConnectionDropped(f"connection lost while running {name!r} (no exit status)")
    status = process.returncode if process.returncode is not None else -1
    return CommandResult(exit_status=status, stdout=stdout, stderr=stderr)


async def probe_tcp(host: str, port: int, *, timeout: float) -> bool:
    """True if a TCP connection to host:port opens within ``timeout``; never raises."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError, ValueError):
        return False
    try:
        writer.close()
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        pass
    return True


async def _load_client_key(path: Path) -> asyncssh.SSHKey:
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise ClientKeyError(f"SSH key {path} does not exist: set DEPLOYBOT_SSH_KEY") from None
    except OSError as exc:
        raise ClientKeyError(f"cannot read SSH key {path}: {exc.strerror}") from None
    try:
        return asyncssh.import_private_key(data)
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError):
        raise ClientKeyError(
            f"SSH key {path} is not an unencrypted OpenSSH private key "
            "(the bot cannot type a key passphrase)"
        ) from None
    finally:
        del data


def _host_key_algs(key_type: str) -> list[str]:
    if key_type == "ssh-rsa":
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [key_type]


async def _presented_fingerprint(
    host: str, port: int, pinned: PublicKey, timeout: float
) -> str | None:
    """Fingerprint of what the server offers (of the pinned type if it has one)."""
    for algs in (_host_key_algs(pinned.key_type), ()):
        try:
            async with asyncio.timeout(timeout):
                key = await asyncssh.get_server_host_key(
                    host, port, server_host_key_algs=algs, config=[]
                )
        except asyncssh.KeyExchangeFailed:
            continue
        except (asyncssh.Error, OSError, TimeoutError):
            return None
        if key is not None:
            return parse_public_key(_key_line(key)).fingerprint
    return None


def _key_line(key: asyncssh.SSHKey) -> str:
    fields = key.export_public_key("openssh").decode("ascii").split()
    return f"{fields[0]} {fields[1]}"


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text[:_REASON_MAX]


def _unreachable_message(where: str, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name of {where}: check the inventory's host"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return f"{where} refused the connection: nothing listens on that port (is sshd up?)"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"no route to {where}: check the address and the network"
    detail = exc.strerror or type(exc).__name__
    return f"cannot reach {where}: {detail}"
