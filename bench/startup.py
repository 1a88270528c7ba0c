"""Start-up time and idle memory of the bot, next to a bare Python interpreter's.

Start-up: a ``deploybot console`` process answering ``/help`` and exiting, against
``python -c pass``. Idle memory: the resident set of ``deploybot run`` polling the fake
Bot API with nothing to do, against an idle ``python`` process. First answer: a fresh
``deploybot run`` with 300 and 1000 machines, none reachable (most refuse connections,
a fifth accept and never answer), each with its host key in sops, gets ``/whoami`` as soon
as it first calls the Bot API; the time to its answer, against the same bot with an empty
inventory. And the slowest answer to /whoami, asked every quarter second through the first
probes of the 1000 machines probed every 5 s (each probe needs its key from sops).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Figure, median
from tests.fake_telegram import FakeTelegram
from tests.lab.sops import make_sops_secrets
from tests.people import ADMIN
from tests.waiting import eventually
from tests.world import make_host_key

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3
FLEETS = (300, 1000)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DEPLOYBOT_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


async def _timed(argv: list[str], cwd: Path, stdin: bytes, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.communicate(stdin)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return time.perf_counter() - started


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _idle_rss(
    argv: list[str], env: dict[str, str], cwd: Path, ready: object = None, *, timeout: float = 30
) -> float:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        if ready is not None:
            await eventually(ready, timeout=timeout, what="the bot ready")  # type: ignore[arg-type]
        else:
            await asyncio.sleep(1.0)  # an idle interpreter has nothing to wait for
        return _rss_kib(proc.pid) / 1024
    finally:
        proc.terminate()
        await proc.wait()


async def _first_answer(
    cwd: Path, inventory: str, extra: dict[str, str], *, span: float = 0.0
) -> float:
    """Seconds from /whoami, sent when the bot first calls the Bot API, to its answer;
    with ``span``, the slowest answer of /whoami asked again and again for that long."""
    (cwd / "machines.toml").write_text(inventory)
    async with FakeTelegram() as tg:
        env = _env(
            {
                "TELEGRAM_BOT_TOKEN": tg.token,
                "TELEGRAM_API_URL": tg.base_url,
                "DEPLOYBOT_ADMINS": str(ADMIN),
                "DEPLOYBOT_DB": str(cwd / "first.sqlite3"),
                "DEPLOYBOT_STATE_DIR": str(cwd / "state"),
                **extra,
            }
        )
        (cwd / "first.sqlite3").unlink(missing_ok=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await tg.wait_until(lambda: tg.count() > 0, timeout=60, what="the bot's first call")
            admin = tg.user(ADMIN, "ada")
            until = time.perf_counter() + span
            worst = 0.0
            while True:
                started = time.perf_counter()
                await tg.send_text(admin, "/whoami")
                await tg.wait_for_message(admin, lambda m: True, timeout=300)
                worst = max(worst, time.perf_counter() - started)
                if time.perf_counter() >= until:
                    return worst
                await asyncio.sleep(0.25)  # a person asking again, not a synchronisation
        finally:
            proc.terminate()
            await proc.wait()


_HELD: list[asyncio.StreamWriter] = []


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, never say a word: the connection is held until the benchmark ends."""
    _HELD.append(writer)


async def _first_answers(cwd: Path) -> list[Figure]:
    secrets = make_sops_secrets(
        cwd,
        dict.fromkeys((f"key{i}" for i in range(max(FLEETS))), make_host_key(cwd)),
        "fleet.yaml",
    )
    extra = {"DEPLOYBOT_SOPS": secrets.sops, "SOPS_AGE_KEY_FILE": str(secrets.age_key_file)}
    silent = [
        await asyncio.start_server(_silent, f"127.0.{2 + i // 250}.{i % 250 + 1}", 0)
        for i in range(max(FLEETS) // 5)
    ]
    try:
        hosts = [s.sockets[0].getsockname()[:2] for s in silent]
        figures = []
        empty = median([await _first_answer(cwd, "", {}) for _ in range(RUNS)])
        for size in FLEETS:
            entries = []
            for i in range(size):
                # Port 1 on 127.0.8.x-127.0.11.x: nothing listens there.
                host, port = (
                    hosts[i // 5] if i % 5 == 0 else (f"127.0.{8 + i // 250}.{i % 250 + 1}", 1)
                )
                entries.append(
                    f'[machines.m{i:04d}]\nhost = "{host}"\nssh_port = {port}\n'
                    f'initrd_port = {port}\nluks = true\nsecrets_file = "{secrets.path}"\n'
                    f'host_key_secret = "key{i}"\n'
                )
            inventory = "\n".join(entries)
            took = median([await _first_answer(cwd, inventory, extra) for _ in range(RUNS)])
            figures.append(
                Figure(
                    f"first answer after start, {size} machines (sops keys, none reachable)",
                    took,
                    "the same with no machines",
                    empty,
                )
            )
        # The first probes, every machine's key from sops: 1000 machines probed every 5 s.
        span = 20.0
        busy = inventory.replace("luks = true\n", 'luks = true\nprobe_interval = "5s"\n')
        worst = await _first_answer(cwd, busy, extra, span=span)
        idle = await _first_answer(cwd, "", {}, span=span)
        figures.append(
            Figure(
                f"slowest answer in the first {span:.0f} s, {size} machines probed every 5 s",
                worst,
                "the same with no machines",
                idle,
            )
        )
        return figures
    finally:
        for writer in _HELD:
            writer.close()
        _HELD.clear()
        for server in silent:
            server.close()


async def measure() -> tuple[list[Figure], dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="deploybot-bench-") as tmp:
        cwd = Path(tmp)
        (cwd / "machines.toml").write_text('[machines.web]\nhost = "127.0.0.1"\nssh_port = 1\n')
        console = [sys.executable, "-m", "bot", "console"]
        bare = [sys.executable, "-c", "pass"]
        env = _env({"DEPLOYBOT_DB": str(cwd / "db.sqlite3")})
        starts = [await _timed(console, cwd, b"/help\n", env) for _ in range(RUNS)]
        bares = [await _timed(bare, cwd, b"", env) for _ in range(RUNS)]
        async with FakeTelegram() as tg:
            run_env = _env(
                {
                    "TELEGRAM_BOT_TOKEN": tg.token,
                    "TELEGRAM_API_URL": tg.base_url,
                    "DEPLOYBOT_DB": str(cwd / "run.sqlite3"),
                    "DEPLOYBOT_STATE_DIR": str(cwd / "state"),
                }
            )

            async def polling() -> bool:
                return tg.count("getUpdates") >= 2

            bot_rss = await _idle_rss([sys.executable, "-m", "bot", "run"], run_env, cwd, polling)
        idle = [sys.executable, "-c", "import time; time.sleep(30)"]
        bare_rss = await _idle_rss(idle, env, cwd)
        answers = await _first_answers(cwd)
    figures = [
        Figure("start-up: console answers /help", median(starts), "python -c pass", median(bares)),
        Figure("idle memory: deploybot run (RSS)", bot_rss, "idle python (RSS)", bare_rss, "MiB"),
        *answers,
    ]
    return figures, {}


def main() -> None:
    from bench.common import table

    figures, _ = asyncio.run(measure())
    print(table(figures))


if __name__ == "__main__":
    main()
