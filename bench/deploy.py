"""The bot's own overhead on a deploy, next to the stand-in nixos-anywhere run alone.

Both install a fresh lab installer host through the same stand-in: once run by hand with a
staged folder (the manual procedure), once by the bot from ``/deploy`` to its "succeeded"
message (preflight, confirmation, staging, remount, install, reboot, health). The
difference is what the bot adds. The Bot API calls one deploy makes are counted too.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from bench.common import Figure, bench_world, median, print_figures
from bot.core.keys import generate_ed25519, new_machine_id
from tests.world import World

RUNS = 3


def stage_by_hand(root: Path) -> None:
    """The manual procedure's staging folder (machine-id, initrd key, host key)."""
    persist = root / "nix" / "persist" / "system"
    (persist / "etc" / "ssh").mkdir(parents=True)
    (persist / "etc" / "machine-id").write_text(new_machine_id())
    (root / "boot").mkdir()
    initrd = generate_ed25519("initrd")
    (root / "boot" / "ssh_host_ed25519_key").write_bytes(initrd.private.reveal())
    host = generate_ed25519("host")
    (persist / "etc" / "ssh" / "ssh_host_ed25519_key").write_bytes(host.private.reveal())
    (persist / "etc" / "ssh" / "ssh_host_ed25519_key.pub").write_text(host.public + "\n")


async def stand_in_alone(world: World, index: int) -> float:
    host = world.lab.start_host(f"alone{index}", luks=False)
    staged = world.root / f"staged-{index}"
    stage_by_hand(staged)
    argv = [
        *world.lab.nixos_anywhere_command(),
        "--flake",
        f"{world.flake}#clawsiecats",
        "--extra-files",
        str(staged),
        "-i",
        str(world.lab.operator_key),
        "-p",
        str(host.ssh_port),
        "-L",
        "--target-host",
        f"root@{host.address}",
    ]
    started = time.perf_counter()
    await asyncio.to_thread(subprocess.run, argv, check=True, capture_output=True)
    return time.perf_counter() - started


async def bot_deploy(world: World, index: int) -> tuple[float, int]:
    """Seconds from /deploy to the job's end (the confirmation press is instant), API calls."""
    tg = world.rig.tg
    op = world.op
    name = f"bench{index}"
    mark = tg.request_mark()
    started = time.perf_counter()
    await world.confirm_deploy(op, name)
    await tg.wait_for_message(
        op,
        lambda m: f"Deploy {name}" in m.body and "— succeeded after" in m.body,
        edits=True,
        since=0,
        timeout=120,
    )
    took = time.perf_counter() - started
    calls = sum(1 for r in tg.requests[mark:] if r.method != "getUpdates")
    return took, calls


async def measure() -> tuple[list[Figure], dict[str, float]]:
    async with bench_world() as world:
        hosts = [world.lab.start_host(f"bench{i}", luks=False) for i in range(RUNS)]
        for index, host in enumerate(hosts):
            world.machine(f"bench{index}", host, luks=False, flake_attr="clawsiecats")
        await world.start(progress_interval=3.0)
        alone = [await stand_in_alone(world, i) for i in range(RUNS)]
        runs = [await bot_deploy(world, i) for i in range(RUNS)]
    bot_times = [t for t, _ in runs]
    calls = [c for _, c in runs]
    figures = [
        Figure(
            "deploy by the bot, /deploy to done", median(bot_times), "stand-in alone", median(alone)
        ),
    ]
    extra = {
        "bot overhead per deploy (s)": median(bot_times) - median(alone),
        "Bot API calls per deploy (excluding getUpdates)": float(median([float(c) for c in calls])),
    }
    return figures, extra


if __name__ == "__main__":
    print_figures(measure)
