"""The service units' hardening and the NixOS module's evaluation time.

Exposure is ``systemd-analyze security --offline=true`` (0 = locked down, 10 = exposed) of
``contrib/deploybot.service`` and of the unit ``nix/module.nix`` gives NixOS, next to the
same service without hardening. Evaluation: ``nix/module.nix`` with every option set,
through nixpkgs' module system, next to importing nixpkgs' ``lib`` alone.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from typing import Any

from bench.common import Figure, median, print_figures
from tests.service.test_nix import FULL
from tests.service_tools import (
    NIX_DIR,
    evaluate_module,
    exposure,
    nixpkgs_lib,
    render_unit,
    runnable_contrib_unit,
    tool,
)

RUNS = 5
STORE = "/nix/store/00000000000000000000000000000000-"
PLAIN_UNIT = """\
[Unit]
Description=deploybot without hardening

[Service]
ExecStart=/bin/true run
User=deploybot
StateDirectory=deploybot
WorkingDirectory=/var/lib/deploybot
"""


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, timeout=120)
    return time.perf_counter() - started


def _evaluations() -> tuple[float, float]:
    nix = tool("nix-instantiate", "nix-bin")
    lib = str(nixpkgs_lib())
    module = [nix, "--eval", "--strict", "--json", str(NIX_DIR / "eval.nix")]
    module += ["--argstr", "nixpkgsLib", lib, "--argstr", "config", json.dumps(FULL)]
    bare = [nix, "--eval", "--strict", "-E", f"(import {lib}).version"]
    modules = [_timed(module) for _ in range(RUNS)]
    bares = [_timed(bare) for _ in range(RUNS)]
    return median(modules), median(bares)


def _module_unit() -> str:
    service: dict[str, Any] = evaluate_module(FULL)["service"]
    programs = {
        f"{STORE}deploybot-0.1.0/bin/deploybot": "/bin/true",
        f"{STORE}coreutils-9.5/bin/kill": "/bin/kill",
    }
    return render_unit(service, programs)


async def measure() -> tuple[list[Figure], dict[str, float]]:
    plain = await asyncio.to_thread(exposure, PLAIN_UNIT)
    contrib = await asyncio.to_thread(exposure, runnable_contrib_unit())
    module = await asyncio.to_thread(exposure, await asyncio.to_thread(_module_unit))
    evaluation, bare = await asyncio.to_thread(_evaluations)
    figures = [
        Figure(
            "exposure: contrib/deploybot.service", contrib, "same unit unhardened", plain, "of 10"
        ),
        Figure("exposure: NixOS module's unit", module, "same unit unhardened", plain, "of 10"),
        Figure(
            "nix/module.nix evaluated, every option set",
            evaluation,
            "import nixpkgs lib alone",
            bare,
        ),
    ]
    return figures, {"exposure limit (policy)": 4.0}


if __name__ == "__main__":
    print_figures(measure)
