"""Many booted machines in this process: asyncssh servers on loopback addresses that answer
the health commands a NixOS system answers, for tests and benchmarks of fleets too large
for the lab's real sshd.

Each server counts its logins and the commands it runs, can drop its connections (a
machine that rebooted, a NAT that forgot the flow), and understands the bot's one-exec
health script (``sh -c`` with delimiters, ``bot.remote.shell.script``, or written
line by line to a kept ``sh -s``) or, with ``has_sh=False``, only single commands, as a
system without a shell would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

PORT = 2222
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
_SECTION = re.compile(r'(.+?); echo "(\S+) (\d+) \$\?"; echo "\S+ \d+" >&2(?:; |$)')


def address(i: int) -> str:
    """127.0.1.1, 127.0.1.2 … 127.0.1.250, 127.0.2.1 …: one loopback address per host."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


@dataclass(eq=False)
class SimHost:
    """One simulated machine and what it saw."""

    address: str
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    has_sh: bool = True
    silent_shells: int = 0  # shells 1 … this read their lines and never answer
    logins: int = 0  # logins that got past authentication
    commands: list[str] = field(default_factory=list)  # every exec and every shell line
    execs: int = 0  # channels opened to run a command
    shells: int = 0  # kept shells (``sh -s``) started
    live: set[asyncssh.SSHServerConnection] = field(default_factory=set)

    def silence_shells(self) -> None:
        """The shells running now stop answering (a login gone silent); new ones answer."""
        self.silent_shells = self.shells

    def drop(self) -> None:
        """Close every connection to this host, as a reboot would."""
        for conn in list(self.live):
            conn.close()

    def answer(self, command: str) -> tuple[str, str, int]:
        if command == "cat /proc/sys/kernel/random/boot_id":
            return self.boot_id + "\n", "", 0
        if command in ANSWERS:
            return ANSWERS[command], "", 0
        if command.startswith("sh -c ") and self.has_sh:
            inner = command[len("sh -c ") :]
            if inner.startswith("'") and inner.endswith("'") and "'" not in inner[1:-1]:
                return self._script(inner[1:-1])  # shlex.join's quoting, undone quickly
            return self._script(shlex.split(command)[2])
        return "", f"bash: {command.split()[0]}: command not found\n", 127

    def _script(self, script: str) -> tuple[str, str, int]:
        out, err, status = [], [], 0
        for found in _SECTION.finditer(script):
            command, tag, number = found[1], found[2], found[3]
            if "'" in command or '"' in command:
                command = shlex.join(shlex.split(command))
            o, e, status = self.answer(command)
            out.append(f"{o}{tag} {number} {status}\n")
            err.append(f"{e}{tag} {number}\n")
        return "".join(out), "".join(err), 0


class Network:
    """Seconds each exec's answer is held back: a stand-in for a remote machine's RTT."""

    def __init__(self) -> None:
        self.latency = 0.0


def _server(host: SimHost) -> type[asyncssh.SSHServer]:
    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self.conn = conn
            host.live.add(conn)

        def auth_completed(self) -> None:
            host.logins += 1

        def connection_lost(self, exc: Exception | None) -> None:
            host.live.discard(self.conn)

        def begin_auth(self, username: str) -> bool:
            return True

    return Server


def _handler(host: SimHost, network: Network) -> object:
    async def handle(process: asyncssh.SSHServerProcess[str]) -> None:
        command = process.command or ""
        host.execs += 1
        if command == "sh -s" and host.has_sh:
            host.shells += 1
            number = host.shells
            while line := await process.stdin.readline():  # a kept shell: a script a line
                if number <= host.silent_shells:
                    continue
                if network.latency:
                    await asyncio.sleep(network.latency)
                host.commands.append(line)
                out, err, _ = host._script(line.rstrip("\n"))
                process.stdout.write(out)
                process.stderr.write(err)
            process.exit(0)
            return
        if network.latency:
            await asyncio.sleep(network.latency)
        host.commands.append(command)
        out, err, status = host.answer(command)
        process.stdout.write(out)
        process.stderr.write(err)
        process.exit(status)

    return handle


@dataclass
class Fleet:
    """The running hosts, the bot's client key and the host key they all present."""

    hosts: list[SimHost]
    client_key: Path
    host_key: str
    network: Network

    def inventory(
        self, *, operators: str = "[]", probe_interval: str = "1h", count: int | None = None
    ) -> str:
        """Machines ``m0`` … of the first ``count`` hosts (all by default)."""
        return "".join(
            f'[machines.m{i}]\nhost = "{h.address}"\nssh_port = {PORT}\n'
            f'operators = {operators}\nprobe_interval = "{probe_interval}"\n\n'
            for i, h in enumerate(self.hosts[:count])
        )


@contextlib.asynccontextmanager
async def sim_hosts(count: int, root: Path) -> AsyncIterator[Fleet]:
    """``count`` listeners on loopback port 2222, torn down afterwards."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = root / "client_key"
    key_path.write_bytes(client_key.export_private_key())
    key_path.chmod(0o600)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    network = Network()
    hosts = [SimHost(address(i)) for i in range(count)]
    listeners = []
    try:
        for host in hosts:
            listeners.append(
                await asyncssh.listen(
                    host.address,
                    PORT,
                    server_factory=_server(host),
                    server_host_keys=[host_key],
                    authorized_client_keys=authorized,
                    process_factory=_handler(host, network),
                    encoding="utf-8",
                    keepalive_interval=0,
                )
            )
        line = host_key.export_public_key().decode().split()
        yield Fleet(hosts, key_path, f"{line[0]} {line[1]}", network)
    finally:
        for host in hosts:
            host.drop()
        for listener in listeners:
            listener.close()
            await listener.wait_closed()


# -- in a process of their own (the benchmark's far side) ----------------------------------


async def serve(count: int, root: Path) -> None:
    """Serve ``count`` hosts until stdin closes, answering one command per stdin line:
    ``latency SECONDS``, or ``stats`` (a JSON line: each host's logins and commands)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with sim_hosts(count, root) as fleet:
        ready = {
            "client_key": str(fleet.client_key),
            "host_key": fleet.host_key,
            "addresses": [h.address for h in fleet.hosts],
        }
        print(json.dumps(ready), flush=True)
        while line := (await reader.readline()).decode().split():
            if line[0] == "latency":
                fleet.network.latency = float(line[1])
                print("{}", flush=True)
            elif line[0] == "stats":
                stats = {
                    "logins": [h.logins for h in fleet.hosts],
                    "commands": [len(h.commands) for h in fleet.hosts],
                    "live": [len(h.live) for h in fleet.hosts],
                }
                print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 3 * int(sys.argv[1]) + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
