"""bot.ssh against a real in-process asyncssh server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from bot.core import keys
from bot.remote.ssh import (
    AuthRefused,
    ClientKeyError,
    CommandTimeout,
    ConnectionDropped,
    HostKeyMismatch,
    NoPinnedKey,
    SshEndpoint,
    Unreachable,
    connect,
    fetch_host_key,
    probe_tcp,
    run,
)

pytestmark = pytest.mark.timeout(30)

PASSPHRASE = b"correct horse battery staple\n"


@dataclass
class Lab:
    port: int
    host_key: asyncssh.SSHKey
    host_key_line: str
    client_key_path: Path
    commands: list[str] = field(default_factory=list)
    stdin_seen: list[bytes] = field(default_factory=list)
    flood_sent: int = 0

    def endpoint(self, host_key: str | None = None, *, key: Path | None = None) -> SshEndpoint:
        return SshEndpoint(
            host="127.0.0.1",
            port=self.port,
            user="root",
            client_key=key or self.client_key_path,
            host_key=self.host_key_line if host_key is None else host_key,
        )


def _line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _serve(
    tmp_path: Path, host_key: asyncssh.SSHKey, authorized: asyncssh.SSHKey | None
) -> tuple[Lab, asyncssh.SSHAcceptor]:
    client = keys.generate_ed25519("bot")
    key_path = tmp_path / "id_ed25519"
    key_path.write_bytes(client.private.reveal())
    key_path.chmod(0o600)
    lab = Lab(port=0, host_key=host_key, host_key_line=_line(host_key), client_key_path=key_path)
    auth_line = client.public if authorized is None else _line(authorized)

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        lab.commands.append(command)
        argv = shlex.split(command)
        if argv[0] == "sha256":
            data = await process.stdin.read()
            lab.stdin_seen.append(data)
            process.stdout.write(hashlib.sha256(data).hexdigest().encode())
            process.exit(0)
        elif argv[0] == "echo":
            process.stdout.write(" ".join(argv[1:]).encode())
            process.stderr.write(b"to stderr")
            process.exit(int(argv[-1]) if argv[-1].isdigit() else 0)
        elif argv[0] == "drop":
            process.stdout.write(b"partial")
            conn = process.get_extra_info("connection")
            await asyncio.sleep(0)
            conn.abort()
        elif argv[0] == "hang":
            await process.channel.wait_closed()
        elif argv[0] == "flood":  # a hostile target: 200 MB unless the reader stops it
            lab.flood_sent = 0
            chunk = b"\x1b[2J" + b"x" * 65530
            try:
                while lab.flood_sent < 200 * 1024 * 1024 and not process.channel.is_closing():
                    process.stdout.write(chunk)
                    lab.flood_sent += len(chunk)
                    await process.stdout.drain()
            except (asyncssh.Error, OSError):
                pass
        else:
            process.exit(127)

    acceptor = await asyncssh.create_server(
        None,
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(auth_line),
        process_factory=handle,
        encoding=None,
        password_auth=False,
        kbdint_auth=False,
    )
    lab.port = acceptor.sockets[0].getsockname()[1]
    return lab, acceptor


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    lab, acceptor = await _serve(tmp_path, host_key, None)
    try:
        yield lab
    finally:
        acceptor.close()
        await acceptor.wait_closed()


async def test_pinned_key_accepted_and_stdin_delivered(lab: Lab) -> None:
    started = time.perf_counter()
    async with await connect(lab.endpoint(), timeout=5) as conn:
        connected = time.perf_counter()
        result = await run(
            conn, ["sha256", "--device", "root; rm -rf /"], input=PASSPHRASE, timeout=5
        )
        finished = time.perf_counter()
    assert result.exit_status == 0
    assert result.stdout_text == hashlib.sha256(PASSPHRASE).hexdigest()
    assert lab.stdin_seen == [PASSPHRASE]
    # argv arrives quoted, as one word per argument, and without the secret
    assert lab.commands == ["sha256 --device 'root; rm -rf /'"]
    assert all(PASSPHRASE.strip().decode() not in c for c in lab.commands)
    print(f"connect {connected - started:.3f}s run {finished - connected:.3f}s")


async def test_exit_status_and_streams(lab: Lab) -> None:
    async with await connect(lab.endpoint(), timeout=5) as conn:
        ok = await run(conn, ["echo", "hi"], timeout=5)
        bad = await run(conn, ["echo", "3"], timeout=5)
    assert (ok.exit_status, ok.stdout, ok.stderr, ok.ok) == (0, b"hi", b"to stderr", True)
    assert (bad.exit_status, bad.ok) == (3, False)


async def test_wrong_pinned_key_names_both_fingerprints(lab: Lab) -> None:
    other = keys.generate_ed25519().public
    with pytest.raises(HostKeyMismatch) as info:
        await connect(lab.endpoint(other), timeout=5)
    expected = keys.fingerprint(other)
    actual = keys.fingerprint(lab.host_key_line)
    assert info.value.expected_fingerprint == expected
    assert info.value.actual_fingerprint == actual
    assert expected in str(info.value)
    assert actual in str(info.value)


async def test_pinned_type_not_offered_is_a_mismatch(tmp_path: Path) -> None:
    host_key = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    lab, acceptor = await _serve(tmp_path, host_key, None)
    try:
        pinned = keys.generate_ed25519().public
        with pytest.raises(HostKeyMismatch) as info:
            await connect(lab.endpoint(pinned), timeout=5)
        assert info.value.actual_fingerprint == keys.fingerprint(lab.host_key_line)
    finally:
        acceptor.close()
        await acceptor.wait_closed()


@pytest.mark.parametrize("pinned", ["", "   "])
async def test_no_pinned_key_is_refused(lab: Lab, pinned: str) -> None:
    endpoint = SshEndpoint("127.0.0.1", lab.port, "root", lab.client_key_path, None)
    with pytest.raises(NoPinnedKey):
        await connect(endpoint, timeout=5)
    with pytest.raises(NoPinnedKey):
        await connect(lab.endpoint(pinned), timeout=5)
    assert lab.commands == []


async def test_refused_port_is_unreachable_quickly(lab: Lab) -> None:
    endpoint = SshEndpoint(
        "127.0.0.1", _free_port(), "root", lab.client_key_path, lab.host_key_line
    )
    started = time.perf_counter()
    with pytest.raises(Unreachable, match="refused"):
        await connect(endpoint, timeout=5)
    assert time.perf_counter() - started < 2


async def test_silent_server_times_out(lab: Lab) -> None:
    async def accept_and_say_nothing(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()
        w.close()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        endpoint = SshEndpoint("127.0.0.1", port, "root", lab.client_key_path, lab.host_key_line)
        with pytest.raises(Unreachable, match="did not answer"):
            await connect(endpoint, timeout=0.3)
        with pytest.raises(Unreachable, match="did not answer"):
            await fetch_host_key("127.0.0.1", port, timeout=0.3)
    finally:
        server.close()
        await server.wait_closed()


async def test_auth_refused(tmp_path: Path) -> None:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    lab, acceptor = await _serve(tmp_path, host_key, stranger)
    try:
        with pytest.raises(AuthRefused, match="authorized keys"):
            await connect(lab.endpoint(), timeout=5)
    finally:
        acceptor.close()
        await acceptor.wait_closed()


async def test_missing_client_key(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(ClientKeyError, match="does not exist"):
        await connect(lab.endpoint(key=tmp_path / "nope"), timeout=5)
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key")
    with pytest.raises(ClientKeyError, match="not an unencrypted"):
        await connect(lab.endpoint(key=garbage), timeout=5)


async def test_connection_dropped_mid_command(lab: Lab) -> None:
    conn = await connect(lab.endpoint(), timeout=5)
    try:
        with pytest.raises(ConnectionDropped):
            await run(conn, ["drop"], timeout=5)
    finally:
        conn.close()
        await conn.wait_closed()


async def test_command_timeout_closes_channel(lab: Lab) -> None:
    async with await connect(lab.endpoint(), timeout=5) as conn:
        with pytest.raises(CommandTimeout, match="hang"):
            await run(conn, ["hang"], timeout=0.2)
        again = await run(conn, ["echo", "still", "usable"], timeout=5)
        empty = await run(conn, ["sha256"], input=b"", timeout=5)
    assert again.stdout == b"still usable"
    assert empty.stdout_text == hashlib.sha256(b"").hexdigest()


async def test_fetch_host_key_is_the_servers_ed25519_key(lab: Lab) -> None:
    line = await fetch_host_key("127.0.0.1", lab.port, timeout=5)
    assert line == " ".join(lab.host_key_line.split()[:2])
    assert keys.parse_public_key(line).key_type == "ssh-ed25519"


async def test_fetch_host_key_unreachable() -> None:
    with pytest.raises(Unreachable):
        await fetch_host_key("127.0.0.1", _free_port(), timeout=2)


async def test_probe_tcp(lab: Lab) -> None:
    assert await probe_tcp("127.0.0.1", lab.port, timeout=2) is True
    assert await probe_tcp("127.0.0.1", _free_port(), timeout=2) is False
    assert await probe_tcp("bad host name!", 1, timeout=0.5) is False


async def test_a_flooding_command_is_cut_and_stopped(lab: Lab) -> None:
    """A target printing 200 MB: the bot keeps 1 MiB, says so, and closes the channel."""
    async with await connect(lab.endpoint(), timeout=5) as conn:
        result = await run(conn, ["flood"], timeout=20, max_output=1 << 20)
        assert result.exit_status == -1
        assert not result.ok
        assert len(result.stdout) <= (1 << 20) + 200
        assert result.stdout.endswith(b"bytes; the command was stopped]\n")
        # The channel was closed: the target stopped long before its 200 MB.
        await asyncio.sleep(0)
        assert lab.flood_sent < 50 * 1024 * 1024
        still = await run(conn, ["echo", "hi"], timeout=5)
        assert still.stdout == b"hi"
