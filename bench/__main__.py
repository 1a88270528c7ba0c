"""``make bench``: run every benchmark, print one table, and write it to bench/results.md.

Each benchmark module has ``async def measure() -> (figures, extra)``: figures carry their
baseline, measured in the same run on the same machine; ``extra`` holds plain figures.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import HEADER, Figure, machine_description

MODULES = (
    "startup",
    "deploy",
    "update",
    "unlock",
    "probes",
    "service",
    "strangers",
    "pins",
    "reload",
)
RESULTS = Path(__file__).resolve().with_name("results.md")


async def run_all(names: tuple[str, ...]) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    notes: list[str] = []
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            notes.append(f"- bench.{name}: not present")
            continue
        started = time.perf_counter()
        found, extra = await module.measure()
        figures += found
        took = time.perf_counter() - started
        notes.append(
            f"- bench.{name} ({took:.0f} s): "
            + "; ".join(f"{key} = {value:.2f}" for key, value in extra.items())
        )
        print(f"bench.{name} done in {took:.1f} s", file=sys.stderr)
    return figures, notes


def main(argv: list[str]) -> int:
    names = tuple(argv) or MODULES
    figures, notes = asyncio.run(run_all(names))
    report = "\n".join(
        [
            "# Benchmark results",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine_description()}.",
            "Every figure is measured next to its baseline in the same run.",
            "",
            HEADER,
            *(f.row() for f in figures),
            "",
            "Other figures:",
            "",
            *notes,
            "",
        ]
    )
    print(report)
    RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
