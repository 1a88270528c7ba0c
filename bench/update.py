"""The bot's update, next to the same steps run by a plain script, in the same run.

The script does what an operator would type (no guard): the lab's ``nix build``, ``nix
copy`` with a pinned known_hosts, and one ssh login running ``nix-env --set`` and
``switch-to-configuration switch`` in a transient unit. The bot runs ``/deploy`` to its
"succeeded" message: the same build and copy, then the review (the button is pressed as
soon as it appears), the guard armed, the activation, a fresh login, the health checks and
the guard disarmed. Every run builds a configuration not built before.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time
from pathlib import Path

from bench.common import Figure, bench_world, median, print_figures
from bot.flows.update import guard
from bot.remote import nix
from tests.lab.host import LabHost
from tests.world import World

RUNS = 5
ATTR = "clawsiecats"
# The lab's build is instant; a real one evaluates the flake and builds for many seconds.
SLOW_BUILD = 5.0


def script_update(world: World, host: LabHost, known: Path) -> float:
    """The plain script: build, copy, set + switch over one ssh login; seconds taken."""
    lab = world.lab
    started = time.perf_counter()
    built = subprocess.run(
        nix.build_argv(lab.nix_command(), flake=str(world.flake), attr=ATTR, outputs=("toplevel",)),
        check=True,
        capture_output=True,
        text=True,
    )
    path = built.stdout.strip().splitlines()[-1]
    env = dict(os.environ)
    env["NIX_SSHOPTS"] = nix.ssh_options(
        known_hosts=known, client_key=lab.operator_key, port=host.ssh_port
    )
    subprocess.run(
        nix.copy_argv(lab.nix_command(), user="root", host=host.address, path=path),
        check=True,
        capture_output=True,
        env=env,
    )
    switch = f"{shlex.join(guard.set_profile(path))} && {shlex.join(guard.activate(0, path))}"
    subprocess.run(
        [*lab.ssh_argv(host, known_hosts=known), switch], check=True, capture_output=True
    )
    took = time.perf_counter() - started
    assert host.current_system == path
    return took


async def bot_update(world: World, host: LabHost, job: int) -> tuple[float, int]:
    """Seconds from /deploy to the job's "succeeded", and the Bot API calls it made."""
    tg, op = world.rig.tg, world.op
    mark = tg.request_mark()
    started = time.perf_counter()
    await tg.send_text(op, "/deploy bot")
    confirmation = await tg.wait_for_message(op, lambda m: bool(m.buttons), timeout=60)
    await tg.press_button(op, confirmation, "Update bot")
    await tg.wait_for_message(
        op,
        lambda m: f"Update bot (job {job}) — succeeded after" in m.body,
        edits=True,
        since=0,
        timeout=120,
    )
    took = time.perf_counter() - started
    assert host.current_generation == job + 1
    calls = sum(1 for r in tg.requests[mark:] if r.method != "getUpdates")
    return took, calls


async def measure() -> tuple[list[Figure], dict[str, float]]:
    async with bench_world() as world:
        lab = world.lab
        plain = lab.start_installed_host("plain", stage="booted", luks=False, flake_attr=ATTR)
        host = lab.start_installed_host("bot", stage="booted", luks=False, flake_attr=ATTR)
        world.machine("bot", host, luks=False, flake_attr=ATTR)
        await world.start(progress_interval=3.0)
        await world.pin("bot", host, initrd=False)
        known = world.root / "known_hosts"
        known.write_text(plain.known_hosts_line("booted") + "\n")
        alone: dict[float, list[float]] = {0.0: [], SLOW_BUILD: []}
        runs: dict[float, list[tuple[float, int]]] = {0.0: [], SLOW_BUILD: []}
        job = 0
        for build in (0.0, SLOW_BUILD):
            for index in range(RUNS):
                version = f"{build}-{index}"
                lab.set_configuration(
                    world.flake, ATTR, version=f"script-{version}", build_seconds=build
                )
                alone[build].append(await asyncio.to_thread(script_update, world, plain, known))
                lab.set_configuration(
                    world.flake, ATTR, version=f"bot-{version}", build_seconds=build
                )
                job += 1
                runs[build].append(await bot_update(world, host, job))
    figures = [
        Figure(
            f"update by the bot, /deploy to confirmed ({label})",
            median([t for t, _ in runs[build]]),
            "build + copy + ssh switch by a script",
            median(alone[build]),
        )
        for build, label in ((0.0, "the lab's instant build"), (SLOW_BUILD, "a 5 s build"))
    ]
    bot_times = [t for t, _ in runs[0.0]]
    extra = {
        "bot overhead per update (s)": median(bot_times) - median(alone[0.0]),
        "Bot API calls per update (excluding getUpdates)": median([float(c) for _, c in runs[0.0]]),
    }
    return figures, extra


if __name__ == "__main__":
    print_figures(measure)
