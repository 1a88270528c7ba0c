"""The asking side of a systemd initrd: what systemd-cryptsetup does for each LUKS volume.

For every volume, one thread runs the real ``/usr/bin/systemd-ask-password`` once per try
(a new query file each time), inside the host's own mount namespace (``ns_bind``), with
the message systemd-cryptsetup uses: ``Please enter passphrase for disk <partition>
(<volume>):`` (or ``recovery key``). The answer is judged against the volume's real LUKS2
header with ``cryptsetup``; verdicts go to the host's console log only, never to the SSH
session. After ``tries`` wrong answers (3, systemd's default) it logs ``Too many attempts
to activate; giving up.`` and asks no more until the host reboots.

``--keyname`` is left out on purpose: it would put the passphrase into the kernel keyring
of the real machine, which no namespace isolates.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.lab import keys, ns_bind
from tests.lab.proc import kill_tree

ASK_PASSWORD = "/usr/bin/systemd-ask-password"
AGENT = "/usr/bin/systemd-tty-ask-password-agent"
TRIES = 3
WRONG = "Failed to activate with specified passphrase. (Passphrase incorrect?)"
GIVING_UP = "Too many attempts to activate; giving up."
#: systemd-cryptsetup's ``/proc/<pid>/comm`` (15 characters kept).
CHECKING_COMM = "systemd-cryptse"


@dataclass(frozen=True)
class Volume:
    """One LUKS volume as the initrd's crypttab names it."""

    partition: str  # the partition label: disk-main-luks
    name: str  # the mapper name: crypted
    image: Path  # its LUKS2 header
    recovery_key: bool = False

    def message(self) -> str:
        what = "recovery key" if self.recovery_key else "passphrase"
        return f"Please enter {what} for disk {self.partition} ({self.name}):"


# on_event(volume, "right" | "wrong" | "gave up") runs on the asker's thread.
EventHook = Callable[[Volume, str], None]


class VolumeAsker:
    """Asks for one volume until it opens, the tries run out, or ``stop()``."""

    def __init__(
        self,
        volume: Volume,
        *,
        folder: Path,
        cryptsetup: str,
        on_event: EventHook,
        console: Callable[[str], None],
        tries: int = TRIES,
        echo_answers: bool = False,
        verify_seconds: float = 0.0,
        proc: Path | None = None,
    ) -> None:
        self.volume = volume
        # A hostile initrd: after a wrong answer, its next query names the answer.
        self.echo_answers = echo_answers
        self._echo = ""
        self.folder = folder
        self.cryptsetup = cryptsetup
        self.on_event = on_event
        self.console = console
        self.tries = tries
        # A real systemd-cryptsetup checks an answer for as long as the key derivation
        # takes, with no query pending; meanwhile its process shows in /proc (``proc``,
        # the host's own) as systemd-cryptsetup.
        self.verify_seconds = verify_seconds
        self.proc = proc
        self._halt = threading.Event()
        self._pid = 0
        self._pids: list[int] = []
        self.opened = False
        self.gave_up = False
        self._lock = threading.Lock()
        self._stopped = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name=f"ask-{volume.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> bool:
        return not (self.opened or self.gave_up or self._stopped)

    def stop(self) -> None:
        """Kill the pending query (a reboot or power cut); no new one is started."""
        with self._lock:
            self._stopped = True
            self._halt.set()
            proc, self._proc = self._proc, None
        if proc is not None:
            kill_tree(proc)

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _ask_once(self) -> bytearray | None:
        argv = ns_bind.argv(
            self.folder,
            [
                ASK_PASSWORD,
                "--no-tty",
                "--icon=drive-harddisk",
                f"--id=cryptsetup:{self.volume.name}",
                "--timeout=0",
                self._message(),
            ],
        )
        with self._lock:
            if self._stopped:
                return None
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            proc = self._proc
            self._pid = proc.pid  # the ask file's PID: unshare and ns_bind exec
            self._running()
        assert proc.stdout is not None
        answer = bytearray()
        while chunk := proc.stdout.read(4096):
            answer += chunk
        proc.stdout.close()
        status = proc.wait()
        with self._lock:
            if self._proc is proc:
                self._proc = None
            if self._stopped or status != 0:
                _wipe(answer)
                return None
        if answer.endswith(b"\n"):
            answer[-1:] = b""
        return answer

    def _message(self) -> str:
        if self._echo:
            return f"Please enter passphrase for disk {self._echo} ({self.volume.name}):"
        return self.volume.message()

    def _run(self) -> None:
        try:
            self._tries()
        finally:
            self._exited()

    def _tries(self) -> None:
        for _ in range(self.tries):
            answer = self._ask_once()
            if answer is None:
                return
            try:
                self._check_slowly()
                correct = self.volume.image.exists() and keys.luks_opens(
                    self.cryptsetup, self.volume.image, bytes(answer)
                )
                if self.echo_answers:
                    self._echo = answer.decode("utf-8", "replace")
            finally:
                _wipe(answer)
            with self._lock:
                if self._stopped:
                    return
            if correct:
                self.opened = True
                self.on_event(self.volume, "right")
                return
            self.console(f"systemd-cryptsetup[{self.volume.name}]: {WRONG}")
            self.on_event(self.volume, "wrong")
        self.console(f"systemd-cryptsetup[{self.volume.name}]: {GIVING_UP}")
        self.gave_up = True
        self.on_event(self.volume, "gave up")

    def _running(self) -> None:
        """systemd-cryptsetup runs from its first query to its last verdict, under one
        PID; here each try's query has its own, so each shows in /proc until the end."""
        if self.proc is None or not self.verify_seconds:
            return
        comm = self.proc / str(self._pid) / "comm"
        comm.parent.mkdir(parents=True, exist_ok=True)
        comm.write_text(CHECKING_COMM + "\n")
        self._pids.append(self._pid)

    def _check_slowly(self) -> None:
        if self._pids:
            self._halt.wait(self.verify_seconds)

    def _exited(self) -> None:
        pids, self._pids = self._pids, []
        for pid in pids:
            assert self.proc is not None  # only set with a /proc
            comm = self.proc / str(pid) / "comm"
            comm.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                comm.parent.rmdir()


def _wipe(buffer: bytearray) -> None:
    buffer[:] = bytes(len(buffer))
