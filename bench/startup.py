"""Start-up time and idle memory of the bot, next to a bare Python interpreter's.

Start-up: a ``deploybot console`` process answering ``/help`` and exiting, against
``python -c pass``. Idle memory: the resident set of ``deploybot run`` polling the fake
Bot API with nothing to do, against an idle ``python`` process.
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
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3


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
    figures = [
        Figure("start-up: console answers /help", median(starts), "python -c pass", median(bares)),
        Figure("idle memory: deploybot run (RSS)", bot_rss, "idle python (RSS)", bare_rss, "MiB"),
    ]
    return figures, {}


def main() -> None:
    from bench.common import table

    figures, _ = asyncio.run(measure())
    print(table(figures))


if __name__ == "__main__":
    main()
