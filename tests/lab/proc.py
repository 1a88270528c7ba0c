"""Process-tree and port helpers: the lab owns every process it starts, children included.

sshd gives each connection its own session (setsid), so killing a process group is not
enough: the whole tree below a listener is found through /proc and killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def _parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid``, parents before children."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_map().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` and everything below it, then reap ``proc``.

    The tree is frozen first (SIGSTOP) so that nothing forks between the scan and the kill.
    """
    if proc.poll() is not None:
        return
    _signal([proc.pid], signal.SIGSTOP)
    tree = descendants(proc.pid)
    _signal(tree, signal.SIGSTOP)
    tree += [pid for pid in descendants(proc.pid) if pid not in tree]
    _signal([proc.pid, *tree], signal.SIGKILL)
    proc.wait()


def kill_pids(pids: list[int]) -> None:
    """Kill processes the lab no longer parents (and everything below them)."""
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    _signal(alive, signal.SIGSTOP)
    tree = alive + [child for pid in alive for child in descendants(pid)]
    _signal(tree, signal.SIGKILL)


def wait_for_port(address: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Poll until ``address:port`` accepts a connection; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address}:{port} did not accept within {timeout}s") from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def port_accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def lab_processes(lab_dir: Path) -> list[str]:
    """Living processes whose command line mentions ``lab_dir`` (sshd, lab shell)."""
    needle = str(lab_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command}")
    return found


def kill_stragglers(lab_dir: Path, *, patience: float = 5.0) -> None:
    """Kill what is left of a lab after its hosts closed: a lab shell an sshd session was
    starting as the session died outlives it by a moment, its stdin not closed yet."""
    deadline = time.monotonic() + patience
    while True:
        left = [int(line.split(":", 1)[0]) for line in lab_processes(lab_dir)]
        if not left or time.monotonic() > deadline:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
