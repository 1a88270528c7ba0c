"""Can this machine run the VM lab? /dev/kvm must create a VM (the KVM_CREATE_VM ioctl,
which fails where /dev/kvm exists but nested virtualisation is off) and the tools must be
installed."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.vm.qemu import ACCEL_ENV, KVM

KVM_CREATE_VM = 0xAE01
PROBE_SECONDS = 20.0
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "debugfs": "e2fsprogs",
    "mkfs.ext4": "e2fsprogs",
}


def problem() -> str | None:
    """Why no VM can run here, or None."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm cannot be opened ({exc.strerror})"
    try:
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
    except OSError as exc:
        return f"/dev/kvm cannot create a VM (KVM_CREATE_VM: {exc.strerror})"
    finally:
        os.close(fd)
    os.close(vm)
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        return "missing packages: " + " ".join(missing)
    if os.geteuid() != 0:
        return "building the images needs root (mmdebstrap, chroot)"
    return None


def choose_accelerator(kernel: Path, cache: Path) -> str:
    """``kvm`` or ``tcg``, also put into ``DEPLOYBOT_VM_ACCEL`` for this process.

    A /dev/kvm that creates VMs may still not run one: nested under another hypervisor,
    a guest's firmware took 6 s and its kernel had not printed a line after 13 minutes,
    where qemu's own TCG boots the same kernel in 15 s. So KVM is asked to boot the
    image's kernel; without its first line within ``PROBE_SECONDS`` the lab uses TCG
    (and says so). The verdict is kept in ``cache`` per kernel; the variable overrides it.
    """
    chosen = os.environ.get(ACCEL_ENV)
    if chosen in ("kvm", "tcg"):
        return chosen
    verdict = cache / f"accel-{kernel.stat().st_size}"
    if verdict.exists():
        chosen = verdict.read_text().strip()
    else:
        chosen = "kvm" if _kvm_boots(kernel) else "tcg"
        verdict.write_text(chosen + "\n")
    os.environ[ACCEL_ENV] = chosen
    return chosen


def _kvm_boots(kernel: Path) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        serial = Path(tmp) / "serial.log"
        argv = [
            "qemu-system-x86_64",
            *KVM,
            "-smp",
            "1",
            "-m",
            "256",
            "-display",
            "none",
            "-monitor",
            "none",
            "-nic",
            "none",
            "-no-reboot",
            "-serial",
            f"file:{serial}",
            "-kernel",
            str(kernel),
            "-append",
            "console=ttyS0 panic=-1",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + PROBE_SECONDS
            while time.monotonic() < deadline and proc.poll() is None:
                if serial.exists() and b"Linux version" in serial.read_bytes():
                    return True
                time.sleep(0.2)
            return False
        finally:
            proc.kill()
            proc.wait()
