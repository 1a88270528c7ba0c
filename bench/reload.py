"""What a reload costs with a large inventory, next to what reading that inventory costs.

In process: a reload that changes every machine (parse, swap, register every schedule
again) and one that changes nothing (only what changed is registered again), each against
``load_inventory`` of the same file. Through the fake Bot API: ``/reload`` against
``/whoami``, the same chat round trip without the reload.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

from bench.common import Figure, median, print_figures
from bot.config.inventory import load_inventory
from bot.flows.reload import Who
from tests.botrig import BotRig
from tests.fake_telegram import FakeTelegram
from tests.people import ADMIN

MACHINES = 200
RUNS = 7


def inventory(count: int, shift: int = 0) -> str:
    """``count`` machines with a probe and a reboot test each; ``shift`` changes them all."""
    return "".join(
        f'[machines.m{i}]\nhost = "10.0.{i // 250}.{i % 250 + 1}"\n'
        f'reboot_check = "{i % 60} 4 * * {shift % 7}"\nprobe_interval = "{60 + i + shift}s"\n'
        for i in range(count)
    )


async def timed(work: Awaitable[object]) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


async def measure() -> tuple[list[Figure], dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="deploybot-bench-") as tmp:
        async with FakeTelegram() as tg:
            rig = BotRig(tg=tg, root=Path(tmp), env={"DEPLOYBOT_ADMINS": str(ADMIN)})
            try:
                await rig.start(inventory(MACHINES))
                path = rig.settings.inventory
                reloader = rig.svc.engine.reloader
                loads, changed, same, trips, whoamis = [], [], [], [], []
                for run in range(RUNS):
                    loads.append(await timed(asyncio.to_thread(load_inventory, path)))
                    rig.write_inventory(inventory(MACHINES, shift=run + 1))
                    changed.append(await timed(reloader.reload(Who(ADMIN, "bench"))))
                    same.append(await timed(reloader.reload(Who(ADMIN, "bench"))))
                admin = tg.user(ADMIN, "ada")
                for _ in range(RUNS):
                    whoamis.append(await timed(rig.ask(admin, "/whoami")))
                    trips.append(await timed(rig.ask(admin, "/reload")))
                answer = tg.last_bot_message(admin)
                assert answer is not None
                assert answer.body.startswith("Reloaded "), answer.body
                jobs = len(rig.svc.engine.schedules.entries()) if rig.svc.engine.schedules else 0
            finally:
                await rig.stop()
    figures = [
        Figure(
            f"reload, {MACHINES} machines all changed",
            median(changed),
            "load_inventory of the same file",
            median(loads),
        ),
        Figure(
            f"reload, {MACHINES} machines unchanged",
            median(same),
            "load_inventory of the same file",
            median(loads),
        ),
        Figure(
            f"/reload round trip, {MACHINES} machines", median(trips), "/whoami", median(whoamis)
        ),
    ]
    return figures, {"schedules registered": float(jobs)}


if __name__ == "__main__":
    print_figures(measure)
