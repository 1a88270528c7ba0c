"""What every lab-shell command works with: the host's published state, its files as
the current stage sees them, the session's streams, and the way to ask the lab to act.

The lab shell runs inside one SSH session, as sshd's ForceCommand, and touches nothing
outside its host's folder. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tests.lab import control
from tests.lab.model import HostPaths, HostState, Stage


class ShellExit(Exception):
    """``exit N``: stop the whole command line with this status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Ctx:
    def __init__(self, host_dir: Path, stage: Stage) -> None:
        self.paths = HostPaths(host_dir)
        self.stage: Stage = stage
        self.state: HostState = self.paths.read_state()
        self.stdin: BinaryIO = sys.stdin.buffer
        self.stdout: BinaryIO = sys.stdout.buffer
        self.stderr: BinaryIO = sys.stderr.buffer
        self.umask = 0o022

    # ------------------------------------------------------------------ streams

    def out(self, text: str) -> None:
        self.stdout.write(text.encode())
        self.stdout.flush()

    def err(self, text: str) -> None:
        self.stderr.write(text.encode())
        self.stderr.flush()

    def fail(self, text: str, status: int = 1) -> int:
        self.err(text.rstrip("\n") + "\n")
        return status

    def stdin_is_tty(self) -> bool:
        return os.isatty(self.stdin.fileno())

    @contextlib.contextmanager
    def no_echo(self) -> Iterator[None]:
        """Turn terminal echo off while a secret is typed, as ``read -s`` does."""
        if not self.stdin_is_tty():
            yield
            return
        fd = self.stdin.fileno()
        saved = termios.tcgetattr(fd)
        quiet = termios.tcgetattr(fd)
        quiet[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        try:
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSANOW, saved)

    def read_line(self) -> bytes:
        """One line of input including its newline; b"" at end of input."""
        return self.stdin.readline()

    # -------------------------------------------------------------------- state

    def refresh(self) -> HostState:
        self.state = self.paths.read_state()
        return self.state

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """Ask the lab to act on this host (stage changes, recorded facts)."""
        answer = control.request(self.state.control, {"host": self.state.name, "op": op, **fields})
        self.refresh()
        return answer

    def wait_for(self, predicate: Callable[[HostState], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.refresh()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    # -------------------------------------------------------------------- files

    def resolve(self, path: str) -> Path:
        """Where ``path`` on the simulated host lives in its folder, for this stage."""
        clean = posixpath.normpath(posixpath.join("/root", path))
        if clean.startswith("//"):
            clean = clean[1:]
        relative = clean.lstrip("/")
        paths = self.paths
        if clean == "/proc" or clean.startswith("/proc/") or clean == "/etc/os-release":
            return paths.sys / relative
        if self.stage == "installer":
            if clean == "/mnt" or clean.startswith("/mnt/"):
                return paths.root / posixpath.relpath(clean, "/mnt")
            return paths.ram / relative
        if self.stage == "booted":
            persist = paths.persist(self.state.persist_dir)
            if clean.startswith("/etc/ssh/") or clean == "/etc/machine-id":
                return persist / relative
            return paths.root / relative
        return paths.initrd / relative
