"""The tests' own hands on a guest: pinned SSH logins to its system and its initramfs,
unlocking by hand, waiting for boots. The bot under test never uses these."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncssh

from tests.vm.guest import PASSPHRASE, Image
from tests.vm.qemu import Guest


@dataclass
class Machine:
    """A running guest of a built image: what a test needs to reach and judge it."""

    guest: Guest
    image: Image

    @property
    def address(self) -> str:
        return self.guest.address

    async def connect(self, *, initrd: bool = False) -> asyncssh.SSHClientConnection:
        """A pinned root login: the initramfs's server (``initrd``) or the system's."""
        keys = self.image.keys
        pinned = asyncssh.import_public_key(keys.initrd_public if initrd else keys.system_public)
        return await asyncssh.connect(
            self.address,
            self.guest.initrd_port if initrd else self.guest.ssh_port,
            username="root",
            client_keys=[str(keys.bot)],
            known_hosts=([pinned], [], []),
            agent_path=None,
            config=[],
            connect_timeout=10,
        )

    async def run(self, command: str, *, check: bool = True, timeout: float = 60) -> str:
        """Run ``command`` on the booted system; its output."""
        async with await self.connect() as conn:
            result = await conn.run(command, check=check, timeout=timeout)
        out = result.stdout
        return out if isinstance(out, str) else ""

    async def wait_initrd(self, timeout: float = 120) -> float:
        return await self.guest.wait_banner(self.guest.initrd_port, timeout)

    async def wait_system(self, timeout: float = 180) -> float:
        return await self.guest.wait_banner(self.guest.ssh_port, timeout)

    async def unlock_by_hand(self, passphrase: str = PASSPHRASE) -> str:
        """What an operator types: ``ssh -p 2222 root@host cryptsetup-askpass`` and the
        passphrase; returns what the initramfs printed."""
        async with await self.connect(initrd=True) as conn:
            result = await conn.run(
                "cryptsetup-askpass", input=passphrase + "\n", timeout=60, check=False
            )
        out = result.stdout
        return out if isinstance(out, str) else ""

    async def boot_id(self) -> str:
        return (await self.run("cat /proc/sys/kernel/random/boot_id")).strip()

    async def wait_running(self, timeout: float = 120) -> str:
        """Wait until systemd says the system is up (running or degraded); its state."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = (await self.run("systemctl is-system-running", check=False)).strip()
            if state in ("running", "degraded"):
                return state
            await asyncio.sleep(0.5)
        raise TimeoutError(f"the guest stayed {state!r} for {timeout}s")
