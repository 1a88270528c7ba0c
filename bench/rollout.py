"""A rollout of many lab machines next to a plain sequential loop of the same updates.

Every request a machine answers waits 50 ms first (a far machine's round trip): an exec,
or a line written to a kept shell; the commands of one line then run without more waiting,
as on a real machine. The loop does what a script would (no guard): per machine the lab's
``nix build``, ``nix copy`` with a pinned known_hosts and one ssh login that sets the
profile and switches. The rollout is ``/deploy tag:fleet`` to its "succeeded" message: one
build, the review (every machine's closure difference), the canary, waves of 5, each
machine behind its guard. Then the time from a failing canary's end to the rollout's stop.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import time
from datetime import datetime
from pathlib import Path

from bench.common import Figure, bench_world, print_figures
from bot.core.poll import poll_until
from bot.flows.update import guard
from bot.remote import nix
from store import Job
from tests.lab.host import LabHost
from tests.world import World

MACHINES = int(os.environ.get("BENCH_ROLLOUT_MACHINES", "50"))
DELAY = 0.05
ENDED = re.compile(r"^Rollout of .* — (succeeded|failed) after")


def script_update(world: World, host: LabHost, attr: str, known: Path) -> None:
    lab = world.lab
    built = subprocess.run(
        nix.build_argv(lab.nix_command(), flake=str(world.flake), attr=attr, outputs=("toplevel",)),
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
    assert host.current_system == path


async def rollout(world: World, command: str, count: int) -> str:
    tg, op = world.rig.tg, world.op
    mark = tg.mark()
    await tg.send_text(op, command)
    question = await tg.wait_for_message(
        op, lambda m: f"Update {count} machines" in str(m.buttons), since=mark, timeout=300
    )
    await tg.press_button(op, question, f"Update {count} machines")
    end = await tg.wait_for_message(
        op,
        lambda m: bool(ENDED.search(m.body.split("\n")[0])),
        edits=True,
        since=mark,
        timeout=1800,
    )
    return end.body


async def measure() -> tuple[list[Figure], dict[str, float]]:
    async with bench_world() as world:
        lab = world.lab
        hosts = []
        for n in range(MACHINES):
            name = f"f{n:02d}"
            host = lab.start_installed_host(name, stage="booted", luks=False, flake_attr=name)
            world.machine(name, host, luks=False, flake_attr=name, tags=["fleet"])
            hosts.append(host)
        canary = lab.start_installed_host("c0", stage="booted", luks=False, flake_attr="c0")
        world.machine("c0", canary, luks=False, flake_attr="c0", tags=["broken"])
        tail = lab.start_installed_host("c1", stage="booted", luks=False, flake_attr="c1")
        world.machine("c1", tail, luks=False, flake_attr="c1", tags=["broken"])
        await world.start(progress_interval=3.0)
        for n, host in enumerate(hosts):
            await world.pin(f"f{n:02d}", host, initrd=False)
            host.set_command_delay(DELAY)
        await world.pin("c0", canary, initrd=False)
        await world.pin("c1", tail, initrd=False)
        # The plain loop, one machine after the other.
        known = world.root / "known_hosts"
        known.write_text("".join(h.known_hosts_line("booted") + "\n" for h in hosts))
        for n in range(MACHINES):
            lab.set_configuration(world.flake, f"f{n:02d}", version="plain")
        started = time.perf_counter()
        for n, host in enumerate(hosts):
            await asyncio.to_thread(script_update, world, host, f"f{n:02d}", known)
        loop = time.perf_counter() - started
        # The rollout of the same machines to a configuration not built before.
        for n in range(MACHINES):
            lab.set_configuration(world.flake, f"f{n:02d}", version="rollout")
        started = time.perf_counter()
        body = await rollout(world, "/deploy tag:fleet", MACHINES)
        took = time.perf_counter() - started
        assert "succeeded after" in body.split("\n")[0], body
        assert all(h.current_generation == 3 for h in hosts)
        # A canary whose new system breaks SSH: from its end to the rollout's.
        lab.set_configuration(world.flake, "c0", breaks_ssh=True)
        lab.set_configuration(world.flake, "c1", version="2")
        body = await rollout(world, "/deploy tag:broken", 2)
        assert "stopped at the first failure: c0 rolled back" in body, body
        store = world.rig.svc.store

        async def ended() -> list[Job]:
            return await store.recent_jobs(10)

        jobs = await poll_until(
            ended, lambda js: all(j.finished_at for j in js), timeout=30, interval=0.1
        )
        canary_job = next(j for j in jobs if j.machine == "c0")
        whole = next(j for j in jobs if j.kind == "rollout" and j.machine == "tag:broken")
        stop = (
            datetime.fromisoformat(whole.finished_at)
            - datetime.fromisoformat(canary_job.finished_at)
        ).total_seconds()
        assert not tail.activations
    figures = [
        Figure(
            f"rollout of {MACHINES} machines (50 ms per round trip), /deploy to succeeded",
            took,
            "the same updates in a plain sequential loop",
            loop,
        )
    ]
    return figures, {"canary's failure to the rollout's stop (s)": stop}


if __name__ == "__main__":
    print_figures(measure)
