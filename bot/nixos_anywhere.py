"""Driving nixos-anywhere: its argv, its output, and the process itself.

nixos-anywhere is a bash script that talks in ``### step ###`` lines and may exit 0 after
a failed bootloader install (nixos-anywhere #291), so the outcome is judged from both the
exit code and what was printed. The disk passphrase reaches it through a pipe named
``/dev/fd/N`` (like ``<(echo …)``), never through a file or argv, and every output line is
redacted before anyone sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import shlex
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bot.secret import Redactor, Secret

__all__ = [
    "DEFAULT_PREFIX",
    "DISK_KEY_FD_AUTO",
    "DISK_KEY_REMOTE",
    "DISK_KEY_SOURCE",
    "ErrorSeen",
    "Event",
    "NixosAnywhereError",
    "NixosAnywhereTimeout",
    "Outcome",
    "OutputLine",
    "OutputParser",
    "Phase",
    "PhaseChanged",
    "build_argv",
    "child_env",
    "clean_line",
    "parse_prefix",
    "run_nixos_anywhere",
]

DEFAULT_PREFIX = "nix run github:nix-community/nixos-anywhere --"
DISK_KEY_REMOTE = "/tmp/disk.key"  # noqa: S108 - the path disko reads, in the installer's RAM
DISK_KEY_FD_AUTO = -1
DISK_KEY_SOURCE = "/dev/fd/@DISK_KEY@"
MAX_LINE = 4096
KILL_GRACE = 5.0
DRAIN_TIMEOUT = 5.0
_CHUNK = 65536
_INSTALL_PHASES = frozenset({"kexec", "disko", "install", "reboot"})

_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_ATTR = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.'+-]{0,199}")
_HOST = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:%-]{0,252}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_REMOTE_PATH = re.compile(r"/[A-Za-z0-9_./-]{1,255}")
_SSH_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9]*=[^\s\x00-\x1f\x7f]*")
_WITHHELD_PREFIXES = ("TELEGRAM_", "DEPLOYBOT_", "SOPS_")
_WITHHELD = frozenset({"SSH_PRIVATE_KEY", "SSHPASS", "SSH_AUTH_SOCK"})


class Phase(StrEnum):
    """The bot's checklist of an install, in order."""

    UPLOAD_KEYS = "upload keys"
    FACTS = "facts"
    KEXEC = "kexec"
    DISKO = "disko"
    INSTALL = "install"
    REBOOT = "reboot"
    DONE = "done"


_ORDER = {phase: i for i, phase in enumerate(Phase)}


# ---------------------------------------------------------------------------- argv


def parse_prefix(setting: str | None) -> list[str]:
    """DEPLOYBOT_NIXOS_ANYWHERE split like a shell would (never run through one)."""
    words = shlex.split(setting if setting and setting.strip() else DEFAULT_PREFIX)
    if not words:
        raise ValueError("DEPLOYBOT_NIXOS_ANYWHERE is empty")
    return words


def build_argv(
    prefix: list[str],
    *,
    flake: str,
    attr: str,
    target_host: str,
    ssh_port: int,
    ssh_key: Path,
    extra_files: Path | None,
    disk_key_fd: int | None,
    ssh_options: Sequence[str] = (),
    print_build_logs: bool = True,
    target_user: str = "root",
    disk_key_remote: str = DISK_KEY_REMOTE,
    phases: Sequence[str] | None = None,
) -> list[str]:
    """The nixos-anywhere command line; ValueError if any value could pose as a flag.

    ``disk_key_fd=DISK_KEY_FD_AUTO`` leaves the placeholder :data:`DISK_KEY_SOURCE` that
    :func:`run_nixos_anywhere` replaces with the pipe it creates.
    """
    if not prefix or any(not isinstance(w, str) or not w for w in prefix):
        raise ValueError("the nixos-anywhere command prefix is empty")
    _check("flake", flake, None)
    if "#" in flake:
        raise ValueError("flake must not contain '#': the attribute is given separately")
    _check("flake attribute", attr, _ATTR)
    _check("target host", target_host, _HOST)
    _check("ssh user", target_user, _USER)
    if isinstance(ssh_port, bool) or not isinstance(ssh_port, int) or not 0 < ssh_port < 65536:
        raise ValueError(f"ssh port must be 1-65535, not {ssh_port!r}")
    argv = [*prefix, "--flake", f"{flake}#{attr}"]
    if extra_files is not None:
        argv += ["--extra-files", _path("extra files", extra_files)]
    argv += ["-i", _path("ssh key", ssh_key), "-p", str(ssh_port)]
    for option in ssh_options:
        if not isinstance(option, str) or not _SSH_OPTION.fullmatch(option):
            raise ValueError(f"ssh option must look like Key=value without spaces: {option!r}")
        argv += ["--ssh-option", option]
    if disk_key_fd is not None:
        _check("disk key path", disk_key_remote, _REMOTE_PATH)
        if disk_key_fd == DISK_KEY_FD_AUTO:
            source = DISK_KEY_SOURCE
        elif (
            isinstance(disk_key_fd, int) and not isinstance(disk_key_fd, bool) and disk_key_fd >= 0
        ):
            source = f"/dev/fd/{disk_key_fd}"
        else:
            raise ValueError(f"disk key fd must be a file descriptor, not {disk_key_fd!r}")
        argv += ["--disk-encryption-keys", disk_key_remote, source]
    if phases is not None:
        unknown = [p for p in phases if p not in _INSTALL_PHASES]
        if unknown or not phases:
            raise ValueError(f"phases must be some of kexec,disko,install,reboot, not {phases!r}")
        argv += ["--phases", ",".join(phases)]
    if print_build_logs:
        argv.append("-L")
    argv += ["--target-host", f"{target_user}@{target_host}"]
    return argv


def child_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for nixos-anywhere: the bot's own, minus the bot's secrets.

    nix needs much of the environment (PATH, HOME, NIX_*, proxies, certificates), so
    this removes what it must not see: the bot token and settings, sops keys,
    ``SSH_PRIVATE_KEY`` (nixos-anywhere would use it), ``SSHPASS`` and the agent socket.
    """
    origin = os.environ if source is None else source
    return {
        name: value
        for name, value in origin.items()
        if name not in _WITHHELD and not name.startswith(_WITHHELD_PREFIXES)
    }


def _check(what: str, value: str, pattern: re.Pattern[str] | None) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is empty")
    if value.startswith("-"):
        raise ValueError(f"{what} must not start with '-': {value[:60]!r}")
    if _BAD_CHARS.search(value):
        raise ValueError(
            f"{what} must not contain whitespace or control characters: {value[:60]!r}"
        )
    if pattern is not None and not pattern.fullmatch(value):
        raise ValueError(f"{what} has characters that are not allowed: {value[:60]!r}")


def _path(what: str, value: Path) -> str:
    text = os.fspath(value)
    if not text or re.search(r"[\x00-\x1f\x7f]", text):
        raise ValueError(f"{what} path is empty or has control characters")
    return os.fspath(Path(text).absolute())


# ---------------------------------------------------------------------------- output


@dataclass(frozen=True)
class PhaseChanged:
    phase: Phase
    text: str


@dataclass(frozen=True)
class OutputLine:
    """The latest meaningful line, for a progress display."""

    text: str


@dataclass(frozen=True)
class ErrorSeen:
    """An error indicator. ``fatal`` ones fail the install even when the exit code is 0."""

    kind: str
    line: str
    hint: str
    fatal: bool
    phase: Phase | None


Event = PhaseChanged | OutputLine | ErrorSeen


@dataclass(frozen=True)
class Outcome:
    ok: bool
    failed_phase: Phase | None
    reason: str


_STEP = re.compile(r"^### (.+) ###$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_STEPS: tuple[tuple[str, Phase], ...] = (
    ("Uploading install SSH keys", Phase.UPLOAD_KEYS),
    ("Gathering machine facts", Phase.FACTS),
    ("Switching system into kexec", Phase.KEXEC),
    ("Generating ", Phase.FACTS),
    ("Uploading the system closure", Phase.INSTALL),
    ("Building the system closure", Phase.INSTALL),
    ("Copying extra files", Phase.INSTALL),
    ("Installing NixOS", Phase.INSTALL),
    ("Uploading ", Phase.DISKO),
    ("Building disko script", Phase.DISKO),
    ("Formatting hard drive with disko", Phase.DISKO),
    ("Rebooting", Phase.REBOOT),
    ("Waiting for the machine to become", Phase.REBOOT),
    ("Done!", Phase.DONE),
)
_NOISE = (
    "Pseudo-terminal will not be allocated",
    "Warning: Permanently added",
)
_RAM_HINT = (
    "the machine has too little RAM for kexec (about 1.5 GB needed): boot a minimal NixOS "
    "installer ISO instead (no kexec needed) and remount /nix/.rw-store"
)
_KEXEC_HINT = (
    "switching into the NixOS installer with kexec failed (often too little RAM): boot a "
    "NixOS installer ISO instead, or see the remote log above"
)
_BOOT_HINT = (
    "installing the bootloader failed, the machine may not boot: check boot.loader and the "
    "disko ESP/BIOS partition"
)
_SPACE_HINT = (
    "a disk or the installer's store ran out of space: remount /nix/.rw-store bigger "
    "(rw_store_size) or check the partition sizes"
)


@dataclass(frozen=True)
class _Indicator:
    pattern: re.Pattern[str]
    kind: str
    hint: str | None  # None: the matched line is the explanation
    fatal: bool


_INDICATORS: tuple[_Indicator, ...] = (
    _Indicator(
        re.compile(r"Retrieving host facts via SSH failed"),
        "facts",
        "could not read the machine's facts over SSH: check host, port and that root can "
        "log in with the bot's key",
        True,
    ),
    _Indicator(
        re.compile(r"Failure unpacking initrd|Initramfs unpacking failed"),
        "memory",
        _RAM_HINT,
        True,
    ),
    _Indicator(
        re.compile(
            r"Failed to kexec into NixOS installer|Kexec may have failed|^kexec failed",
            re.IGNORECASE,
        ),
        "kexec",
        _KEXEC_HINT,
        True,
    ),
    _Indicator(
        re.compile(
            r"Failed to install bootloader|installation of GRUB on .* failed|grub-install: error"
            r"|^Died at .*grub|^Traceback \(most recent call last\)"
        ),
        "bootloader",
        _BOOT_HINT,
        True,
    ),
    _Indicator(re.compile(r"No space left on device"), "space", _SPACE_HINT, True),
    _Indicator(re.compile(r"^aborted: (.*)"), "aborted", None, True),
    _Indicator(re.compile(r"^error: "), "error", None, False),
    _Indicator(
        re.compile(r"Out of memory|oom-kill|Cannot allocate memory"), "memory", _RAM_HINT, False
    ),
    _Indicator(
        re.compile(r"Permission denied \(publickey"),
        "auth",
        "the machine refused the SSH key: check DEPLOYBOT_SSH_KEY and root's authorized keys",
        False,
    ),
    _Indicator(
        re.compile(
            r"Connection refused|Connection timed out|No route to host|Network is unreachable"
            r"|Could not resolve hostname"
        ),
        "unreachable",
        "the machine could not be reached over SSH: check host, port and that it is up",
        False,
    ),
)
_HINT_MAX = 300
_SPECIFIC = ("aborted", "memory", "facts", "kexec", "bootloader", "space")


def clean_line(raw: str) -> str:
    """What a terminal would show: ANSI codes and control characters removed."""
    if "\r" in raw:
        segments = [s for s in raw.split("\r") if s.strip()]
        raw = segments[-1] if segments else ""
    return _CONTROL.sub("", _ANSI.sub("", raw)).strip()


class OutputParser:
    """Streaming reader of nixos-anywhere output: feed lines, get events, then judge."""

    def __init__(self) -> None:
        self.phase: Phase | None = None
        self.last_line = ""
        self.errors: list[ErrorSeen] = []
        self.done = False
        self.install_finished = False

    def feed(self, line: str) -> list[Event]:
        text = clean_line(line)
        if not text or text.startswith(_NOISE):
            return []
        events: list[Event] = []
        step = _STEP.match(text)
        if step:
            label = step.group(1).strip()
            phase = next((p for prefix, p in _STEPS if label.startswith(prefix)), None)
            if phase is Phase.DONE:
                self.done = True
            if phase is not None and (self.phase is None or _ORDER[phase] > _ORDER[self.phase]):
                self.phase = phase
                events.append(PhaseChanged(phase, label))
            text = label
        else:
            if text == "installation finished!":
                self.install_finished = True
            error = self._indicator(text)
            if error is not None:
                self.errors.append(error)
                events.append(error)
        self.last_line = text
        events.append(OutputLine(text))
        return events

    def _indicator(self, text: str) -> ErrorSeen | None:
        for ind in _INDICATORS:
            match = ind.pattern.search(text)
            if match:
                hint = ind.hint or (match.group(1) if match.groups() else text)
                return ErrorSeen(ind.kind, text, hint[:_HINT_MAX], ind.fatal, self.phase)
        return None

    def judge(self, exit_code: int) -> Outcome:
        """Combine the exit code with what was printed.

        Exit 0 is only a success with ``### Done! ###`` and no fatal error line: a bootloader
        failure before the reboot still exits 0 (#291), and a missing Done line means the
        output is incomplete or the prefix did not run nixos-anywhere. Being wrong towards
        failure costs a look at the log; being wrong towards success waits for a machine
        that will never ask to be unlocked. Plain ``error:`` lines from nix are not fatal by
        themselves: nixos-anywhere prints one when it probes a local build for another
        architecture and then builds remotely; they only explain a non-zero exit.
        """
        fatal = [e for e in self.errors if e.fatal]
        if exit_code == 0:
            if fatal:
                first = self._explain(fatal)
                return Outcome(
                    ok=False,
                    failed_phase=first.phase,
                    reason=f"nixos-anywhere exited 0 but reported an error: {first.hint}; "
                    "the machine may have rebooted into a broken system",
                )
            if not self.done:
                return Outcome(
                    ok=False,
                    failed_phase=self.phase,
                    reason="nixos-anywhere exited 0 without printing '### Done! ###': the "
                    "output is incomplete or the command is not nixos-anywhere; check the log",
                )
            return Outcome(ok=True, failed_phase=None, reason="installed")
        where = f"during {self.phase.value}" if self.phase else "before reaching the machine"
        status = f"was killed by signal {-exit_code}" if exit_code < 0 else f"exited {exit_code}"
        if fatal:
            reason = self._explain(fatal).hint
        elif self.errors:
            reason = self.errors[-1].hint
        elif self.last_line:
            reason = f"last output: {self.last_line[:300]}"
        else:
            reason = "no output"
        return Outcome(
            ok=False, failed_phase=self.phase, reason=f"nixos-anywhere {status} {where}: {reason}"
        )

    @staticmethod
    def _explain(errors: list[ErrorSeen]) -> ErrorSeen:
        specific = [e for e in errors if e.kind in _SPECIFIC]
        return (specific or errors)[0]


# ---------------------------------------------------------------------------- process


class NixosAnywhereError(Exception):
    """nixos-anywhere could not be started or run."""


class NixosAnywhereTimeout(NixosAnywhereError, TimeoutError):
    """It ran longer than allowed; its whole process group was stopped."""


LineCallback = Callable[[str], Awaitable[None]] | Callable[[str], None]


async def run_nixos_anywhere(
    argv: Sequence[str],
    *,
    disk_key: Secret | None,
    on_line: LineCallback,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    timeout: float,
    redact_also: Iterable[Secret] = (),
    max_line: int = MAX_LINE,
    kill_grace: float = KILL_GRACE,
    drain_timeout: float = DRAIN_TIMEOUT,
) -> int:
    """Run nixos-anywhere in its own process group and return its exit status.

    With ``disk_key``, argv must contain :data:`DISK_KEY_SOURCE` once; it becomes
    ``/dev/fd/N``, the read end of a pipe that holds the key (written verbatim, no newline
    added). ``env=None`` inherits the bot's whole environment: pass :func:`child_env`.
    stdout and stderr are merged, read line by line, capped at ``max_line``
    characters, redacted and handed to ``on_line``. Cancellation or the timeout stops the
    whole group: SIGTERM, then SIGKILL after ``kill_grace`` seconds.
    """
    args = list(argv)
    secrets = [s for s in (disk_key, *redact_also) if s is not None]
    slots = [i for i, a in enumerate(args) if a == DISK_KEY_SOURCE]
    if disk_key is not None and len(slots) != 1:
        raise ValueError(f"argv must contain {DISK_KEY_SOURCE} exactly once to pass the disk key")
    if disk_key is None and slots:
        raise ValueError(f"argv names {DISK_KEY_SOURCE} but no disk key was given")
    read_fd: int | None = None
    write_fd: int | None = None
    if disk_key is not None:
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
            raise NixosAnywhereError(
                f"cannot start {args[0]!r}: {exc.strerror or exc}; check DEPLOYBOT_NIXOS_ANYWHERE"
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
    if disk_key is not None and write_fd is not None:
        feeder = asyncio.create_task(_feed(write_fd, disk_key.reveal()))
    reader = asyncio.create_task(_pump(stream, on_line, secrets, max_line))
    waiter = asyncio.create_task(proc.wait())
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                reader.result()
            code = await waiter
            await _drain(reader, proc.pid, drain_timeout)
        return code
    except TimeoutError:
        if deadline.expired():
            await _stop_group(proc, kill_grace)
            raise NixosAnywhereTimeout(
                f"nixos-anywhere did not finish within {timeout:g} s and was stopped"
            ) from None
        raise
    finally:
        if proc.returncode is None:
            await _stop_group(proc, kill_grace)
        tasks = [t for t in (reader, waiter, feeder) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        transport.close()


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
    """SIGTERM the whole group, SIGKILL what is left after ``grace``, reap the leader."""
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
