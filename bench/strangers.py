"""Whether strangers can hold up a passphrase: its relay with 60 of them posting in a group.

Run ``python -m bench.strangers [rounds]``. Real parts: the bot built by the composition
root (with its rate limiter, as in production), polling the fake Bot API over HTTP,
relaying to a lab host behind real sshd whose initrd checks the answer against a real
LUKS2 header. Each round reboots the host into its initrd, lets the bot prompt, then:

- with strangers: 60 accounts the bot does not know post a command each in a group the
  bot is in (no admin is a member), and the passphrase is sent right after them;
- baseline: the same passphrase with no strangers.

The figure is the time from the passphrase message reaching the Bot API to the initrd
receiving it (target: within 1.2× of the baseline).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from bench.common import Figure, bench_world
from bot.config.tuning import Tuning
from tests.lab.host import LabHost
from tests.world import World

PROMPT = "waiting for its disk passphrase"
STRANGERS = 60
TUNING = Tuning(confirm_timeout=20.0, answer_timeout=20.0, ssh_timeout=5.0, reboot_poll=0.2)


async def one_round(world: World, host: LabHost, group_id: int, strangers: int) -> float:
    tg, op = world.rig.tg, world.op
    mark = tg.mark()
    host.reboot(down_for=0.2)
    machine = world.rig.svc.inventory.get("clawsiecats")
    assert machine is not None
    session = asyncio.ensure_future(world.rig.engine.unlocker.follow_boot(machine, trigger="bench"))
    # Every prompt out (the operator's and the admin's) before anyone answers: otherwise
    # the baseline would also time the admin's prompt still on its way.
    for person in (op, world.admin):
        await tg.wait_for_message(person, lambda m: PROMPT in m.body, timeout=60, since=mark)
    if strangers:
        group = tg.group(group_id, f"lobby {group_id}")
        for n in range(strangers):
            user = tg.user(800_000 + group_id * -1000 + n, f"s{n}")
            await tg.send_text(user, f"/status clawsiecats {n}", chat=group)
    before = len(host.attempts)
    sent = time.time()
    await tg.send_text(op, host.luks_passphrase or "")
    await host.wait_until(lambda: len(host.attempts) > before, 200, "the answer")
    took = host.attempts[-1].at - sent
    result = await asyncio.wait_for(session, 60)
    assert result.ok, result.summary
    return took


async def run_bench(rounds: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"strangers": [], "quiet": []}
    async with bench_world() as world:
        world.rig.tuning = TUNING
        host = world.lab.start_installed_host("clawsiecats", initrd="askpass")
        world.machine("clawsiecats", host, unlock_timeout="120s", boot_timeout="60s")
        _ = world.op, world.admin
        await world.start()
        await world.pin("clawsiecats", host)
        for n in range(rounds):
            found["quiet"].append(await one_round(world, host, -200_000 - n, 0))
            found["strangers"].append(await one_round(world, host, -100_000 - n, STRANGERS))
    return found


async def measure() -> tuple[list[Figure], dict[str, float]]:
    """For ``make bench``: the relay with 60 strangers posting, next to the same without."""
    rows = await run_bench(5)
    figure = Figure(
        f"passphrase → initrd while {STRANGERS} strangers post in a group",
        statistics.median(rows["strangers"]),
        "the same with no strangers",
        statistics.median(rows["quiet"]),
    )
    return [figure], {"worst with strangers (s)": max(rows["strangers"])}


async def main(rounds: int) -> None:
    rows = await run_bench(rounds)
    for name, values in rows.items():
        ms = [v * 1000 for v in values]
        print(
            f"{name:10} median {statistics.median(ms):6.0f} ms  max {max(ms):6.0f} ms  n={len(ms)}"
        )
    ratio = statistics.median(rows["strangers"]) / statistics.median(rows["quiet"])
    print(f"ratio      {ratio:.2f}× (target: within 1.2×)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
