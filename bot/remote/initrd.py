"""Handing a passphrase to a waiting initrd over an established, pinned SSH connection.

Two initrds, two protocols (docs/unlocking.md, docs/initrd.md): the scripted initrd's
prompts ``Passphrase for …:`` and prompts again after a wrong answer; the systemd initrd
is answered with ``systemd-tty-ask-password-agent`` on a terminal. There, each LUKS volume
is its own query (``--list`` names the disk), a wrong answer makes a new query, and after
three tries per boot systemd-cryptsetup gives up without a word to the SSH session.
Neither tells the session that unlocking succeeded: the caller confirms by waiting for
the system's own SSH.

Everything the initrd prints is hostile input: read into bounded ``bytearray`` buffers
that are zeroed when the relay ends (an early keystroke could have been echoed into
them), and stripped of control characters before anyone sees a word of it.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import asyncssh

from bot.core.secret import Secret
from bot.core.text import printable
from bot.remote.transcript import READ_LIMIT, Transcript

PROMPT = b"Passphrase for"
NOT_REQUESTED = b"Passphrase is not requested now"
AGENT = "systemd-tty-ask-password-agent"
ASKPASS = "cryptsetup-askpass"
#: The agent prints this after the prompt, then turns echo off: write only after it.
HINT = b"(press TAB for no echo) "
MAX_PROMPTS = 16
MAX_QUERIES = 16
#: systemd-cryptsetup's ``tries=`` default, which NixOS keeps (docs/unlocking.md, docs/initrd.md).
SYSTEMD_TRIES = 3
#: How long after an answer systemd-cryptsetup may still be checking it (the LUKS key
#: derivation: seconds on a fast machine, more on a slow one) before silence counts.
VERIFY_LIMIT = 120.0
#: ``/proc/<pid>/comm`` of systemd-cryptsetup (the kernel keeps 15 characters).
CRYPTSETUP_COMM = "systemd-cryptse"
_LISTED = re.compile(r"^'(.*)' \(PID (\d+)\)$")
_DISK = re.compile(r"^Please enter (passphrase|recovery key) for disk (.+?):?$")
_KEY_NAMES = {
    "\t": "TAB",
    "\n": "a line break",
    "\r": "a carriage return",
    "\x03": "Ctrl-C",
    "\x04": "Ctrl-D",
    "\x15": "Ctrl-U",
    "\x7f": "DEL",
}


class Relay(Enum):
    """What the initrd did with the answer."""

    ACCEPTED = "accepted"  # no new prompt: unlocking goes on
    WRONG = "wrong"  # asked again: the passphrase was wrong
    GAVE_UP = "gave up"  # systemd initrd: out of tries this boot; only a reboot helps
    NOT_WAITING = "not waiting"  # nothing was asking for a passphrase
    DROPPED = "dropped"  # the connection broke before the answer was handed over: not sent
    REFUSED = "refused"  # the passphrase has control characters: not sent


@dataclass(frozen=True)
class Query:
    """One pending systemd password query, as ``--list`` shows it (sanitised)."""

    message: str
    pid: int

    @property
    def disk(self) -> str:
        """``disk-main-luks (crypted)`` from systemd-cryptsetup's message, else the message."""
        match = _DISK.match(self.message)
        return match.group(2) if match else self.message

    @property
    def what(self) -> str:
        """``passphrase`` or ``recovery key``."""
        match = _DISK.match(self.message)
        return match.group(1) if match else "passphrase"


@dataclass(frozen=True)
class RelayOutcome:
    result: Relay
    flavour: Literal["askpass", "systemd"]
    detail: str = ""
    #: systemd: the query that was answered, and the queries still pending afterwards.
    answered: Query | None = None
    pending: tuple[Query, ...] = field(default=())
    #: systemd: the initrd still answered at the end, with nothing asking again.
    stayed: bool = False


def clean(text: str, limit: int = 200) -> str:
    """Hostile text from a target as one printable, trimmed line of at most ``limit``."""
    return printable(text, limit).strip()


def control_characters(passphrase: Secret) -> str | None:
    """Why ``passphrase`` cannot be typed into a password prompt, or None when it can.

    The agent reads key presses: TAB toggles echo, DEL and Ctrl-U edit, Ctrl-C kills it,
    Ctrl-D skips the query, a line break ends the answer early. Any of them would hand
    the initrd something other than the passphrase, so such a passphrase is never sent.
    """
    for byte in passphrase.reveal():
        if byte < 0x20 or byte == 0x7F:
            char = chr(byte)
            name = _KEY_NAMES.get(char, f"the control character 0x{byte:02x}")
            return (
                f"it contains {name}, which a password prompt takes as a key press, not as "
                "part of the passphrase"
            )
    return None


async def _listing(conn: asyncssh.SSHClientConnection, timeout: float) -> tuple[int | None, str]:
    """``--list``'s exit status and output (read-only); no status when it did not run."""
    try:
        result = await conn.run(f"{AGENT} --list", timeout=timeout, check=False)
    except (asyncssh.Error, OSError):
        return None, ""
    status = result.exit_status if result.exit_status is not None else -1  # killed
    return status, result.stdout if isinstance(result.stdout, str) else ""


async def has_agent(conn: asyncssh.SSHClientConnection, timeout: float = 10.0) -> bool | None:
    """Whether the initrd has the systemd password agent (it is a systemd initrd); None
    when that could not be read."""
    status, _ = await _listing(conn, timeout)
    return None if status is None else status != 127


async def list_queries(
    conn: asyncssh.SSHClientConnection, timeout: float = 10.0
) -> list[Query] | None:
    """The pending systemd queries; None when the agent is missing (exit 127), failed, or
    the connection did: only a clean exit 0 says what is pending."""
    status, text = await _listing(conn, timeout)
    if status != 0:
        return None
    queries = []
    for line in text[:READ_LIMIT].splitlines()[:MAX_QUERIES]:
        match = _LISTED.match(line.strip())
        if match:
            queries.append(Query(clean(match.group(1)), int(match.group(2))))
    return queries


async def relay_passphrase(
    conn: asyncssh.SSHClientConnection,
    passphrase: Secret,
    *,
    mode: Literal["auto", "askpass", "systemd"],
    prompt_timeout: float = 15.0,
    settle: float = 10.0,
    query: Query | None = None,
) -> RelayOutcome:
    """Answer the initrd's pending passphrase query once and judge what it did with it.

    ``query`` (systemd) names the query to answer; by default the first one listed. It
    is answered only when the agent asks for it first (``NOT_WAITING`` otherwise).
    """
    why = control_characters(passphrase)
    if why is not None:
        return RelayOutcome(Relay.REFUSED, "systemd" if mode == "systemd" else "askpass", why)
    if mode in ("auto", "askpass"):
        outcome = await _askpass(conn, passphrase, prompt_timeout, settle)
        if outcome is not None or mode == "askpass":
            return outcome or RelayOutcome(Relay.NOT_WAITING, "askpass", f"{ASKPASS} not found")
    return await _systemd(conn, passphrase, query, prompt_timeout, settle)


async def _askpass(
    conn: asyncssh.SSHClientConnection, passphrase: Secret, prompt_timeout: float, settle: float
) -> RelayOutcome | None:
    """None when the initrd has no cryptsetup-askpass (exit 127): try the systemd way."""
    try:
        process = await conn.create_process(ASKPASS, encoding=None, stderr=asyncssh.STDOUT)
    except (asyncssh.Error, OSError) as exc:
        return RelayOutcome(Relay.DROPPED, "askpass", clean(str(exc)))
    out = Transcript(process)
    sent = False
    try:
        found = await out.until((PROMPT, NOT_REQUESTED), prompt_timeout)
        if found is None:
            await _wait_exit(process, 2.0)
            if process.exit_status == 127:
                return None
            return RelayOutcome(Relay.NOT_WAITING, "askpass", _tail(out))
        if found == NOT_REQUESTED:
            return RelayOutcome(Relay.NOT_WAITING, "askpass", "passphrase is not requested now")
        sent = await _type(process, passphrase, b"\n")
        # Silence is no verdict while cryptsetup derives the key (docs/initrd.md): wait for
        # a sign, a new prompt (wrong), nothing asking any more or the session's end.
        again = await out.until((PROMPT, NOT_REQUESTED), max(settle, VERIFY_LIMIT))
    except (asyncssh.Error, OSError) as exc:
        return _broke("askpass", exc, sent=sent)
    finally:
        process.close()
        out.wipe()
    if again == PROMPT:
        return RelayOutcome(Relay.WRONG, "askpass")
    return RelayOutcome(Relay.ACCEPTED, "askpass")


async def _systemd(
    conn: asyncssh.SSHClientConnection,
    passphrase: Secret,
    query: Query | None,
    prompt_timeout: float,
    settle: float,
) -> RelayOutcome:
    """Answer one query with the agent: the first one it shows, which ``--list`` names
    first (both read the directory in the same order). Ctrl-D would skip a query, but
    sent before the agent has switched the terminal to raw mode it is the line
    discipline's end of file, which the agent takes as an empty answer — a try lost. So
    the agent is closed instead before any other prompt is answered."""
    before = await list_queries(conn, prompt_timeout)
    if before is None:
        return RelayOutcome(Relay.NOT_WAITING, "systemd", f"{AGENT} not found or not answering")
    if not before:
        return RelayOutcome(Relay.NOT_WAITING, "systemd", "no password query is pending")
    target = query if query is not None else before[0]
    if target.message not in {q.message for q in before}:
        return RelayOutcome(
            Relay.NOT_WAITING, "systemd", f"disk {target.disk} is not asking any more"
        )
    try:
        # Echo off from the start, so even a stray early keystroke is never shown back.
        process = await conn.create_process(
            f"{AGENT} --query",
            encoding=None,
            term_type="dumb",
            term_modes={asyncssh.PTY_ECHO: 0},
            stderr=asyncssh.STDOUT,
        )
    except (asyncssh.Error, OSError) as exc:
        return RelayOutcome(Relay.DROPPED, "systemd", clean(str(exc)))
    out = Transcript(process)
    sent = False
    found = ""
    try:
        first = out.cursor
        if await out.until((HINT,), prompt_timeout) is not None:
            shown = _prompt_text(out.since(first, out.cursor - len(HINT)))
            if shown == target.message:
                sent = await _type(process, passphrase, b"\r")
                # The answer is handed over when the agent moves on: to the next query's
                # prompt or its exit. The next query is left pending: Ctrl-C stops the
                # agent without answering it, where a hang-up (closing the terminal) can
                # reach it as end of input, an empty answer that costs that disk a try.
                if await out.until((HINT,), settle) is not None:
                    process.stdin.write(b"\x03")
                    await process.stdin.drain()
                    await _wait_exit(process, settle)
            else:
                found = shown
    except (asyncssh.Error, OSError) as exc:
        return _broke("systemd", exc, sent=sent)
    finally:
        process.close()
        out.wipe()
    if found:
        # The agent asks in its directory's order; closing it skips nothing.
        first_asked = Query(found, 0)
        return RelayOutcome(
            Relay.NOT_WAITING,
            "systemd",
            f"the initrd now asks for disk {first_asked.disk} first; nothing was sent",
            pending=tuple(before),
        )
    if not sent:
        return RelayOutcome(
            Relay.NOT_WAITING, "systemd", f"the agent never asked for disk {target.disk}"
        )
    return await _judge(conn, target, prompt_timeout, settle)


async def checking(conn: asyncssh.SSHClientConnection, pid: int, timeout: float) -> bool:
    """Whether the systemd-cryptsetup that asked (the PID ``--list`` showed; it stays the
    same across tries) still runs. After an answer it is checking it with no query
    pending, for as long as the key derivation takes (docs/initrd.md). False whenever
    that cannot be read."""
    try:
        result = await conn.run(f"cat /proc/{int(pid)}/comm", timeout=timeout, check=False)
    except (asyncssh.Error, OSError):
        return False
    text = result.stdout if isinstance(result.stdout, str) else ""
    return result.exit_status == 0 and text[:100].strip() == CRYPTSETUP_COMM


async def _judge(
    conn: asyncssh.SSHClientConnection, target: Query, timeout: float, settle: float
) -> RelayOutcome:
    """After an answer: the same disk asking again means wrong; the initrd going away
    means accepted; silence is accepted too once systemd-cryptsetup is done checking,
    unless the caller knows the tries ran out."""
    start = time.monotonic()
    deadline = start + settle
    give_up = deadline + timeout
    verify_until = start + max(VERIFY_LIMIT, settle + timeout)
    pending: list[Query] | None = None
    while True:
        listed = await list_queries(conn, timeout)
        if listed is None and conn.is_closed():
            return RelayOutcome(Relay.ACCEPTED, "systemd", "the initrd went away", answered=target)
        # A slow or failed listing (a loaded initrd) is not a verdict: look again.
        pending = listed if listed is not None else pending
        if listed is not None and any(q.message == target.message for q in listed):
            return RelayOutcome(Relay.WRONG, "systemd", answered=target, pending=tuple(listed))
        now = time.monotonic()
        waited = (now >= deadline and pending is not None) or now >= give_up
        # Nothing asks again yet: while systemd-cryptsetup runs without a query, the
        # verdict, wrong or right, is still to come.
        if waited and not (
            pending == [] and now < verify_until and await checking(conn, target.pid, timeout)
        ):
            break
        await asyncio.sleep(0.5)
    if conn.is_closed():
        return RelayOutcome(Relay.ACCEPTED, "systemd", "the initrd went away", answered=target)
    if pending is None:
        return RelayOutcome(
            Relay.ACCEPTED, "systemd", "its pending queries could not be listed", answered=target
        )
    return RelayOutcome(
        Relay.ACCEPTED, "systemd", answered=target, pending=tuple(pending), stayed=True
    )


def _prompt_text(raw: str) -> str:
    """The message of the prompt the agent printed before its hint."""
    shown = printable(raw.replace("\r", "\n"), newlines=True)
    lines = [line for line in shown.split("\n") if line.strip()]
    text = clean(lines[-1] if lines else "", 400)
    return text.removeprefix("🔐").strip()


async def _type(
    process: asyncssh.SSHClientProcess[bytes], passphrase: Secret, enter: bytes
) -> bool:
    """Write the passphrase and ``enter`` to the prompt's pipe; True once it is handed over."""
    process.stdin.write(passphrase.reveal())
    process.stdin.write(enter)
    await process.stdin.drain()
    return True


def _broke(
    flavour: Literal["askpass", "systemd"], exc: BaseException, *, sent: bool
) -> RelayOutcome:
    """The connection broke: after the answer, an initrd that accepted it ends (and its
    sshd with it); before, nothing was sent."""
    if sent:
        return RelayOutcome(Relay.ACCEPTED, flavour, "the initrd closed the connection")
    return RelayOutcome(Relay.DROPPED, flavour, clean(str(exc)) or type(exc).__name__)


async def _wait_exit(process: asyncssh.SSHClientProcess[bytes], timeout: float) -> None:
    try:
        await asyncio.wait_for(process.wait_closed(), timeout)
    except TimeoutError:
        return


def _tail(out: Transcript) -> str:
    return clean(bytes(out.seen[-400:]).decode("utf-8", "replace"))
