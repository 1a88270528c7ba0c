"""Running guests under qemu with KVM: 1 vCPU, ≤ 1 GiB, user-mode networking whose only
way in is two forwards bound to a loopback address (the system's SSH and the initrd's),
``restrict=on`` so the guest reaches nothing outside, the serial console in a log file.

A test guest writes to a qcow2 overlay of its image's disk, so the cached base stays
clean, and is stopped by its pid (``Guest.stop``) whatever the test did.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"
MEMORY_MB = 1024
ACCEL_ENV = "DEPLOYBOT_VM_ACCEL"
KVM = ("-enable-kvm", "-cpu", "host,-arch-capabilities")
TCG = ("-accel", "tcg", "-cpu", "max")


def accelerator() -> tuple[str, ...]:
    """KVM, unless ``DEPLOYBOT_VM_ACCEL=tcg`` (set by the lab's fixtures when KVM here
    creates VMs but cannot run one at a usable speed: see tests/vm/kvm.py)."""
    return TCG if os.environ.get(ACCEL_ENV) == "tcg" else KVM


def _base(kernel: Path, initrd: Path, cmdline: str, serial: Path) -> list[str]:
    return [
        QEMU,
        *accelerator(),
        "-smp",
        "1",
        "-m",
        str(MEMORY_MB),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{serial}",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        cmdline,
    ]


def _drive(path: Path, fmt: str) -> list[str]:
    return ["-drive", f"file={path},format={fmt},if=virtio,cache=unsafe"]


def run_builder(
    *, kernel: Path, initrd: Path, cmdline: str, disks: list[Path], serial: Path, timeout: float
) -> None:
    """Boot the builder guest (no network at all) and wait for it to power off."""
    argv = [*_base(kernel, initrd, cmdline, serial), "-no-reboot", "-nic", "none"]
    for disk in disks:
        argv += _drive(disk, "raw")
    subprocess.run(argv, check=True, timeout=timeout, stdin=subprocess.DEVNULL)


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class Guest:
    """One running guest of an image, reachable at ``address`` on two forwarded ports."""

    name: str
    kernel: Path
    initrd: Path
    cmdline: str
    base_disk: Path
    dir: Path
    address: str
    ssh_port: int = 0
    initrd_port: int = 0
    pid: int | None = None
    started: float = 0.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def serial(self) -> Path:
        return self.dir / "serial.log"

    @property
    def overlay(self) -> Path:
        return self.dir / "disk.qcow2"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.overlay.exists():
            subprocess.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    str(self.base_disk),
                    str(self.overlay),
                ],
                check=True,
            )
        self.ssh_port = self.ssh_port or free_port(self.address)
        self.initrd_port = self.initrd_port or free_port(self.address)
        forwards = (
            f"hostfwd=tcp:{self.address}:{self.ssh_port}-:22,"
            f"hostfwd=tcp:{self.address}:{self.initrd_port}-:2222"
        )
        argv = [
            *_base(self.kernel, self.initrd, self.cmdline, self.serial),
            *_drive(self.overlay, "qcow2"),
            "-netdev",
            f"user,id=net0,restrict=on,{forwards}",
            "-device",
            "virtio-net-pci,netdev=net0",
        ]
        with (self.dir / "qemu.log").open("ab") as out:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self.pid = self._proc.pid
        self.started = time.monotonic()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the guest by its pid: SIGTERM (qemu exits at once), then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    async def wait_banner(self, port: int, timeout: float) -> float:
        """Wait until an SSH server answers on ``port`` (the forward alone accepts any
        connection); the time it took from now."""
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.name}: qemu exited; console:\n{self.console()[-3000:]}")
            if await ssh_banner(self.address, port):
                return time.monotonic() - start
            await asyncio.sleep(0.2)
        raise TimeoutError(
            f"{self.name}: no SSH on port {port} after {timeout:.0f}s; console:\n"
            f"{self.console()[-3000:]}"
        )


async def ssh_banner(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"SSH-")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
