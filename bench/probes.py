"""One round of probes over 200 simulated hosts, next to 200 plain sequential SSH logins.

The hosts are in-process asyncssh servers on 127.0.1.N answering the health commands a
booted NixOS machine answers; the bot is the real one (Watcher, store, fake Bot API). Both
the bot and the servers share this process and its event loop, so the figures are an
upper bound for the bot's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh

from bench.common import Figure, print_figures
from bot.remote.ssh import SshEndpoint, connect, run
from tests.botrig import BotRig
from tests.fake_telegram import FakeTelegram
from tests.people import ADMIN, OPERATOR

HOSTS = 200
PORT = 2222
LATENCY = 0.05
ANSWERS = {
    "systemctl is-system-running": "running\n",
    "systemctl --failed --no-legend --plain": "",
    "df -P / /nix/persist/system": (
        "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
        "tmpfs 1048576 4096 1044480 1% /\n"
        "/dev/mapper/crypted 20971520 2097152 18874368 10% /nix\n"
    ),
    "cat /proc/uptime": "12345.67 20000.00\n",
    "true": "",
}


def address(i: int) -> str:
    return f"127.0.1.{i + 1}"


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True


class Network:
    """Seconds each command's answer is held back: a stand-in for a remote machine's RTT."""

    latency = 0.0


def _handler(boot_id: str) -> object:
    async def handle(process: asyncssh.SSHServerProcess[str]) -> None:
        if Network.latency:
            await asyncio.sleep(Network.latency)
        command = process.command or ""
        if command == "cat /proc/sys/kernel/random/boot_id":
            process.stdout.write(boot_id + "\n")
            process.exit(0)
        elif command in ANSWERS:
            process.stdout.write(ANSWERS[command])
            process.exit(0)
        else:
            process.stderr.write(f"bash: {command.split()[0]}: command not found\n")
            process.exit(127)

    return handle


@contextlib.asynccontextmanager
async def servers(root: Path) -> AsyncIterator[tuple[Path, str]]:
    """200 listeners; yields the client key path and the (shared) host key line."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = root / "client_key"
    key_path.write_bytes(client_key.export_private_key())
    key_path.chmod(0o600)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    listeners = [
        await asyncssh.listen(
            address(i),
            PORT,
            server_factory=_Server,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            process_factory=_handler(str(uuid.uuid4())),
            encoding="utf-8",
        )
        for i in range(HOSTS)
    ]
    try:
        line = host_key.export_public_key().decode().split()
        yield key_path, f"{line[0]} {line[1]}"
    finally:
        for listener in listeners:
            listener.close()
            await listener.wait_closed()


def inventory() -> str:
    return "".join(
        f'[machines.m{i}]\nhost = "{address(i)}"\nssh_port = {PORT}\n'
        f'operators = [{OPERATOR}]\nprobe_interval = "1h"\n\n'
        for i in range(HOSTS)
    )


async def sequential_logins(key: Path, host_key: str) -> float:
    started = time.perf_counter()
    for i in range(HOSTS):
        endpoint = SshEndpoint(address(i), PORT, "root", key, host_key)
        conn = await connect(endpoint, timeout=10)
        async with conn:
            await run(conn, ["true"], timeout=10)
    return time.perf_counter() - started


async def measure() -> tuple[list[Figure], dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="deploybot-bench-") as tmp:
        root = Path(tmp)
        async with servers(root) as (key, host_key), FakeTelegram() as tg:
            rig = BotRig(
                tg=tg,
                root=root,
                env={"DEPLOYBOT_ADMINS": str(ADMIN), "DEPLOYBOT_SSH_KEY": str(key)},
            )
            try:
                await rig.start(inventory())
                for i in range(HOSTS):
                    await rig.svc.store.update_machine(f"m{i}", host_key=host_key)
                watcher = rig.engine.watcher
                await watcher.probe_round()  # warm-up: first boot ids recorded
                started = time.perf_counter()
                results = await watcher.probe_round()
                round_time = time.perf_counter() - started
                up = sum(1 for r in results if r is not None and r.ok)
                tracemalloc.start()
                await watcher.probe_round()
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                baseline = await sequential_logins(key, host_key)
                Network.latency = LATENCY
                started = time.perf_counter()
                await watcher.probe_round()
                slow_round = time.perf_counter() - started
                slow_baseline = await sequential_logins(key, host_key)
                Network.latency = 0.0
                concurrency = rig.svc.tuning.probe_concurrency
            finally:
                await rig.stop()
    figures = [
        Figure(
            f"one probe round, {HOSTS} hosts (health included)",
            round_time,
            f"{HOSTS} sequential SSH logins + `true`",
            baseline,
        ),
        Figure(
            f"same, each command answered after {LATENCY * 1000:.0f} ms",
            slow_round,
            "same logins, same delay",
            slow_baseline,
        ),
    ]
    extra = {
        "hosts found up and healthy": float(up),
        "peak Python memory during a round (MiB)": peak / 2**20,
        "probe concurrency": float(concurrency),
    }
    return figures, extra


if __name__ == "__main__":
    print_figures(measure)
