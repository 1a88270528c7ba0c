"""What every benchmark shares: a world to run in, timing, and a table of results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.botrig import BotRig
from tests.fake_telegram import FakeTelegram
from tests.lab.lab import Lab
from tests.people import ADMIN
from tests.world import World, make_world

os.environ.setdefault("PTB_TIMEDELTA", "true")


@dataclass(frozen=True)
class Figure:
    """One measured figure next to the baseline measured in the same run."""

    name: str
    value: float
    baseline_name: str
    baseline: float
    unit: str = "s"

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    def row(self) -> str:
        return (
            f"| {self.name} | {self.value:.3f} {self.unit} | {self.baseline_name} | "
            f"{self.baseline:.3f} {self.unit} | {self.ratio:.2f}× |"
        )


HEADER = "| figure | value | baseline | baseline value | ratio |\n|---|---|---|---|---|"


def table(figures: list[Figure]) -> str:
    return "\n".join([HEADER, *(f.row() for f in figures)])


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine_description() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


@contextlib.asynccontextmanager
async def bench_world() -> AsyncIterator[World]:
    """A lab, a fake Bot API and a bot configured for them, torn down afterwards."""
    with tempfile.TemporaryDirectory(prefix="deploybot-bench-") as tmp, Lab() as lab:
        root = Path(tmp)
        async with FakeTelegram() as tg:
            rig = BotRig(tg=tg, root=root, env={"DEPLOYBOT_ADMINS": str(ADMIN)})
            try:
                yield make_world(lab, rig, root)
            finally:
                await rig.stop()


Measure = Callable[[], Coroutine[Any, Any, tuple[list[Figure], dict[str, float]]]]


def print_figures(measure: Measure) -> None:
    """``python -m bench.NAME``: run one benchmark and print its table and other figures."""
    figures, extra = asyncio.run(measure())
    print(table(figures))
    for name, value in extra.items():
        print(f"{name}: {value:.2f}")
