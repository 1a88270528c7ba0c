"""A fleet of 1000: one probe round next to 1000 sequential logins, and the bot's memory.

The hosts are asyncssh servers on 127.0.x.y (tests/sshhosts.py) answering what a booted
NixOS machine answers, each exec after ``LATENCY`` seconds (a stand-in for a remote
machine's round trip). They run in a process of their own, as remote machines would, so
their work is not counted as the bot's (both still share this machine's cores). The bot is
the real one (Watcher, Fleet, store, fake Bot API). The round is measured twice: the first
one logs in to every host, the next finds the logins kept. The baseline, in the same run:
1000 logins one after another, each running ``true`` with the same delay.

Memory: ``deploybot run`` in its own process with the same 1000 machines, once it has
probed every one of them twice (so it holds 1000 open logins), next to an idle ``python``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Figure, print_figures
from bench.startup import ROOT, _env, _idle_rss
from bot.remote.ssh import SshEndpoint, connect, run
from store import Store
from tests.botrig import BotRig
from tests.fake_telegram import FakeTelegram
from tests.people import ADMIN, OPERATOR
from tests.sshhosts import PORT

HOSTS = 1000
LATENCY = 0.05
RSS_PROBE_INTERVAL = "10s"


@dataclass
class FarHosts:
    """The hosts' process, told what to do over its stdin."""

    proc: asyncio.subprocess.Process
    client_key: Path
    host_key: str
    addresses: list[str]

    async def ask(self, line: str) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return json.loads(await self.proc.stdout.readline())

    async def latency(self, seconds: float) -> None:
        await self.ask(f"latency {seconds}")

    async def stats(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = await self.ask("stats")
        return found

    def inventory(self, *, probe_interval: str = "1h", count: int | None = None) -> str:
        return "".join(
            f'[machines.m{i}]\nhost = "{address}"\nssh_port = {PORT}\n'
            f'operators = [{OPERATOR}]\nprobe_interval = "{probe_interval}"\n\n'
            for i, address in enumerate(self.addresses[:count])
        )


@contextlib.asynccontextmanager
async def far_hosts(count: int, root: Path) -> AsyncIterator[FarHosts]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.sshhosts",
        str(count),
        str(root),
        cwd=ROOT,
        env=_env({}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 24,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 300))
        yield FarHosts(proc, Path(ready["client_key"]), ready["host_key"], ready["addresses"])
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _more_files() -> None:
    """A socket per host (and the bot's database, logs …) in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * HOSTS + 256)), hard))


async def sequential_logins(hosts: FarHosts) -> float:
    started = time.perf_counter()
    for address in hosts.addresses:
        endpoint = SshEndpoint(address, PORT, "root", hosts.client_key, hosts.host_key)
        conn = await connect(endpoint, timeout=30)
        async with conn:
            await run(conn, ["true"], timeout=30)
    return time.perf_counter() - started


async def rounds(hosts: FarHosts, root: Path) -> dict[str, float]:
    async with FakeTelegram() as tg:
        rig = BotRig(
            tg=tg,
            root=root,
            env={"DEPLOYBOT_ADMINS": str(ADMIN), "DEPLOYBOT_SSH_KEY": str(hosts.client_key)},
        )
        try:
            await rig.start(hosts.inventory())
            for i in range(HOSTS):
                await rig.svc.store.update_machine(f"m{i}", host_key=hosts.host_key)
            watcher = rig.engine.watcher
            started = time.perf_counter()
            await watcher.probe_round()
            cold = time.perf_counter() - started
            started = time.perf_counter()
            results = await watcher.probe_round()
            warm = time.perf_counter() - started
            tracemalloc.start()  # a third round: tracing slows it several times over
            await watcher.probe_round()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            up = sum(1 for r in results if r is not None and r.ok)
            kept = rig.engine.basics.fleet.open_logins
            concurrency = rig.svc.basics.tuning.probe_concurrency
        finally:
            await rig.stop()
    stats = await hosts.stats()
    return {
        "cold": cold,
        "warm": warm,
        "up": float(up),
        "logins": float(sum(stats["logins"])),
        "kept": float(kept),
        "peak": peak / 2**20,
        "concurrency": float(concurrency),
    }


async def bot_rss(hosts: FarHosts, root: Path, machines: int) -> float:
    """``deploybot run`` with ``machines`` of the hosts, once each was probed twice."""
    cwd = root / f"rss-{machines}"
    cwd.mkdir()
    inventory = hosts.inventory(probe_interval=RSS_PROBE_INTERVAL, count=machines)
    (cwd / "machines.toml").write_text(inventory)
    store = await Store.open(cwd / "run.sqlite3")
    try:
        for i in range(machines):
            await store.update_machine(f"m{i}", host_key=hosts.host_key)
    finally:
        await store.close()
    before = (await hosts.stats())["commands"][:machines]
    async with FakeTelegram() as tg:
        env = _env(
            {
                "TELEGRAM_BOT_TOKEN": tg.token,
                "TELEGRAM_API_URL": tg.base_url,
                "DEPLOYBOT_ADMINS": str(ADMIN),
                "DEPLOYBOT_DB": str(cwd / "run.sqlite3"),
                "DEPLOYBOT_STATE_DIR": str(cwd / "state"),
                "DEPLOYBOT_SSH_KEY": str(hosts.client_key),
            }
        )

        async def probed_twice() -> bool:
            now = (await hosts.stats())["commands"][:machines]
            return all(n - b >= 2 for n, b in zip(now, before, strict=True))

        return await _idle_rss(
            [sys.executable, "-m", "bot", "run"], env, cwd, probed_twice, timeout=300
        )


async def measure() -> tuple[list[Figure], dict[str, float]]:
    _more_files()
    with tempfile.TemporaryDirectory(prefix="deploybot-bench-") as tmp:
        root = Path(tmp)
        async with far_hosts(HOSTS, root) as hosts:
            await hosts.latency(LATENCY)
            found = await rounds(hosts, root)
            baseline = await sequential_logins(hosts)
            await hosts.latency(0.0)
            one = await bot_rss(hosts, root, 1)
            many = await bot_rss(hosts, root, HOSTS)
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        idle = await _idle_rss(sleeper, _env({}), root)
    delay = f"{LATENCY * 1000:.0f} ms per exec"
    figures = [
        Figure(
            f"probe round, {HOSTS} hosts, logins kept, {delay}",
            found["warm"],
            f"{HOSTS} sequential SSH logins + `true`, {delay}",
            baseline,
        ),
        Figure(
            f"first probe round, {HOSTS} hosts (every login new), {delay}",
            found["cold"],
            f"{HOSTS} sequential SSH logins + `true`, {delay}",
            baseline,
        ),
        Figure(
            f"memory: deploybot run, {HOSTS} machines, logins kept (RSS)",
            many,
            "idle python (RSS)",
            idle,
            "MiB",
        ),
    ]
    extra = {
        "speed-up of the kept round over sequential logins (×)": baseline / found["warm"],
        "hosts found up and healthy": found["up"],
        "logins the hosts saw over both rounds": found["logins"],
        "logins kept open after the rounds": found["kept"],
        "peak Python memory during a kept round (MiB)": found["peak"],
        "probe concurrency": found["concurrency"],
        "deploybot run with 1 machine (RSS MiB)": one,
        "memory per machine, logins kept (KiB)": (many - one) * 1024 / (HOSTS - 1),
    }
    return figures, extra


if __name__ == "__main__":
    print_figures(measure)
