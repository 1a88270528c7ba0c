"""Handing a passphrase to a waiting initrd over an established, pinned SSH connection.

Two initrds, two protocols (docs/unlocking.md): the scripted initrd's ``cryptsetup-askpass``
prompts ``Passphrase for …:`` and prompts again after a wrong answer; the systemd initrd
has no ``cryptsetup-askpass`` and is answered with ``systemd-tty-ask-password-agent`` on a
terminal, after which a query that shows up again means the answer was wrong. Neither
tells the SSH session that unlocking succeeded: "no new prompt" is the best the initrd
says, and the caller confirms by waiting for the system's own SSH.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import asyncssh

from bot.core.secret import Secret

PROMPT = b"Passphrase for"
NOT_REQUESTED = b"Passphrase is not requested now"
AGENT = "systemd-tty-ask-password-agent"
ASKPASS = "cryptsetup-askpass"
READ_LIMIT = 64 * 1024


class Relay(Enum):
    """What the initrd did with the answer."""

    ACCEPTED = "accepted"  # no new prompt: unlocking goes on
    WRONG = "wrong"  # asked again: the passphrase was wrong
    NOT_WAITING = "not waiting"  # nothing was asking for a passphrase
    DROPPED = "dropped"  # the connection broke before the answer was handed over: not sent


@dataclass(frozen=True)
class RelayOutcome:
    result: Relay
    flavour: Literal["askpass", "systemd"]
    detail: str = ""


class _Transcript:
    """Reads a remote process's output until one of some markers shows up."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.process = process
        self.seen = b""
        self._cursor = 0

    async def until(self, markers: tuple[bytes, ...], timeout: float) -> bytes | None:
        """The first marker in output not yet consumed; None at EOF or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [(self.seen.find(m, self._cursor), m) for m in markers]
            hits = [(index, m) for index, m in hits if index >= 0]
            if hits:
                index, marker = min(hits)
                self._cursor = index + len(marker)
                return marker
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                chunk = await asyncio.wait_for(self.process.stdout.read(4096), remaining)
            except TimeoutError:
                return None
            if not chunk:
                return None
            if len(self.seen) + len(chunk) > READ_LIMIT:
                drop = len(self.seen) + len(chunk) - READ_LIMIT
                self.seen = self.seen[drop:]
                self._cursor = max(0, self._cursor - drop)
            self.seen += chunk


async def relay_passphrase(
    conn: asyncssh.SSHClientConnection,
    passphrase: Secret,
    *,
    mode: Literal["auto", "askpass", "systemd"],
    prompt_timeout: float = 15.0,
    settle: float = 10.0,
) -> RelayOutcome:
    """Answer the initrd's pending passphrase query once and judge what it did with it."""
    if mode in ("auto", "askpass"):
        outcome = await _askpass(conn, passphrase, prompt_timeout, settle)
        if outcome is not None or mode == "askpass":
            return outcome or RelayOutcome(Relay.NOT_WAITING, "askpass", f"{ASKPASS} not found")
    return await _systemd(conn, passphrase, prompt_timeout, settle)


async def _askpass(
    conn: asyncssh.SSHClientConnection, passphrase: Secret, prompt_timeout: float, settle: float
) -> RelayOutcome | None:
    """None when the initrd has no cryptsetup-askpass (exit 127): try the systemd way."""
    try:
        process = await conn.create_process(ASKPASS, encoding=None, stderr=asyncssh.STDOUT)
    except (asyncssh.Error, OSError) as exc:
        return RelayOutcome(Relay.DROPPED, "askpass", str(exc)[:200])
    out = _Transcript(process)
    sent = False
    try:
        found = await out.until((PROMPT, NOT_REQUESTED), prompt_timeout)
        if found is None:
            await _wait_exit(process, 2.0)
            if process.exit_status == 127:
                return None
            return RelayOutcome(Relay.NOT_WAITING, "askpass", _tail(out.seen))
        if found == NOT_REQUESTED:
            return RelayOutcome(Relay.NOT_WAITING, "askpass", "passphrase is not requested now")
        process.stdin.write(passphrase.reveal() + b"\n")
        await process.stdin.drain()
        sent = True
        again = await out.until((PROMPT,), settle)
    except (asyncssh.Error, OSError) as exc:
        if sent:
            # An initrd that accepted the passphrase ends, and its sshd with it.
            return RelayOutcome(Relay.ACCEPTED, "askpass", "the initrd closed the connection")
        return RelayOutcome(Relay.DROPPED, "askpass", str(exc)[:200] or type(exc).__name__)
    finally:
        process.close()
    if again == PROMPT:
        return RelayOutcome(Relay.WRONG, "askpass")
    return RelayOutcome(Relay.ACCEPTED, "askpass")


async def _systemd(
    conn: asyncssh.SSHClientConnection, passphrase: Secret, prompt_timeout: float, settle: float
) -> RelayOutcome:
    try:
        process = await conn.create_process(
            AGENT, encoding=None, term_type="dumb", stderr=asyncssh.STDOUT
        )
    except (asyncssh.Error, OSError) as exc:
        return RelayOutcome(Relay.DROPPED, "systemd", str(exc)[:200])
    out = _Transcript(process)
    sent = False
    try:
        found = await out.until((b"assphrase", b"assword"), prompt_timeout)
        if found is None:
            await _wait_exit(process, 2.0)
            if process.exit_status == 127:
                return RelayOutcome(Relay.NOT_WAITING, "systemd", f"{AGENT} not found")
            return RelayOutcome(Relay.NOT_WAITING, "systemd", _tail(out.seen))
        # The prompt text may go on after the word; wait for its closing colon.
        await out.until((b": ",), 2.0)
        process.stdin.write(passphrase.reveal() + b"\n")
        await process.stdin.drain()
        sent = True
        await _wait_exit(process, settle)
    except (asyncssh.Error, OSError) as exc:
        if sent:
            return RelayOutcome(Relay.ACCEPTED, "systemd", "the initrd closed the connection")
        return RelayOutcome(Relay.DROPPED, "systemd", str(exc)[:200] or type(exc).__name__)
    finally:
        process.close()
    # systemd-cryptsetup asks again after a wrong passphrase: look for a new query.
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        try:
            listed = await conn.run(f"{AGENT} --list", timeout=5.0, check=False)
        except (asyncssh.Error, OSError):
            return RelayOutcome(Relay.ACCEPTED, "systemd", "the initrd went away")
        text = listed.stdout if isinstance(listed.stdout, str) else ""
        if text.strip():
            return RelayOutcome(Relay.WRONG, "systemd")
        if listed.exit_status not in (0, None):
            return RelayOutcome(Relay.ACCEPTED, "systemd")
        await asyncio.sleep(0.5)
    return RelayOutcome(Relay.ACCEPTED, "systemd")


async def _wait_exit(process: asyncssh.SSHClientProcess[bytes], timeout: float) -> None:
    try:
        await asyncio.wait_for(process.wait_closed(), timeout)
    except TimeoutError:
        return


def _tail(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()[-200:]
