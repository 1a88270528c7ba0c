"""How long unlocking takes, next to what a person with a terminal would see.

Run ``python -m bench.unlock [rounds]``. Real parts: the bot built by the composition root,
polling the fake Bot API over HTTP, relaying to lab hosts behind real sshd whose initrds
check the answer against a real LUKS2 header. Figures, for each initrd flavour:

- answer → initrd: from the passphrase message arriving at the Bot API to the initrd
  receiving it, next to a plain ``ssh -p <initrd port> … cryptsetup-askpass`` (or ``ssh -tt
  … systemd-tty-ask-password-agent``) fed the same passphrase in the same run;
- initrd up → prompt: from the initrd's sshd coming up after a reboot to the prompt being
  sent, with the bot polling as it does while a reboot is expected (``reboot_poll`` = 1 s);
  next to it, what one look at both ports and one SSH login cost on this machine.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Figure
from bot.config.inventory import Machine
from bot.config.tuning import Tuning
from bot.remote.place import Pins
from bot.remote.target import Reach, Target
from tests.botrig import BotRig
from tests.fake_telegram import FakeTelegram, RecordedRequest
from tests.lab.host import LabHost
from tests.lab.lab import Lab
from tests.people import ADMIN
from tests.world import World, make_world

PROMPT = "waiting for its disk passphrase"
FLAVOURS = ("askpass", "systemd")
# Production timings, except the ones that only bound failures.
TUNING = Tuning(confirm_timeout=20.0, answer_timeout=20.0, ssh_timeout=5.0, reboot_poll=1.0)


@dataclass
class Figures:
    rows: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.rows.setdefault(name, []).append(seconds)

    def table(self) -> str:
        width = max(len(name) for name in self.rows) + 2
        lines = [f"{'':{width}}{'median':>9}{'min':>9}{'max':>9}{'n':>4}"]
        for name, values in self.rows.items():
            ms = [v * 1000 for v in values]
            lines.append(
                f"{name:{width}}{statistics.median(ms):>7.0f}ms{min(ms):>7.0f}ms"
                f"{max(ms):>7.0f}ms{len(ms):>4}"
            )
        return "\n".join(lines)


class Bench:
    def __init__(self, world: World, rounds: int) -> None:
        self.world = world
        self.rounds = rounds
        self.figures = Figures()

    @property
    def tg(self) -> FakeTelegram:
        return self.world.rig.tg

    def machine(self, name: str) -> Machine:
        found = self.world.rig.svc.inventory.get(name)
        assert found is not None
        return found

    async def run(self, hosts: dict[str, LabHost]) -> None:
        for name, host in hosts.items():
            await self.world.pin(name, host)
        for _ in range(self.rounds):
            for flavour, host in hosts.items():
                await self.bot_round(flavour, host)
                await self.ssh_round(flavour, host)
        for flavour, host in hosts.items():
            await self.costs(flavour, host)

    async def bot_round(self, flavour: str, host: LabHost) -> None:
        """Reboot; the bot follows it, prompts, and relays the answer.

        The machine stays down for a random while, so the initrd comes up at a random point
        of the bot's polling second, as it would on a real machine.
        """
        machine = self.machine(flavour)
        mark = self.tg.request_mark()
        host.reboot(down_for=random.uniform(0.2, 1.2))
        session = asyncio.ensure_future(
            self.world.rig.engine.unlocker.follow_boot(machine, trigger="bench")
        )
        sent = await self.tg.wait_for_request(
            "sendMessage", _mentions(flavour, PROMPT), since=mark, timeout=30
        )
        self.figures.add(f"{flavour}: initrd up → prompt sent", sent.at - _initrd_up_at(host))
        before = len(host.attempts)
        arrived = time.time()
        await self.tg.send_text(self.world.op, host.luks_passphrase or "")
        await host.wait_until(lambda: len(host.attempts) > before, 30, "the answer")
        self.figures.add(f"{flavour}: answer → initrd, bot", host.attempts[-1].at - arrived)
        result = await asyncio.wait_for(session, 60)
        assert result.ok, result.summary
        assert host.attempts[-1].correct

    async def ssh_round(self, flavour: str, host: LabHost) -> None:
        """The same passphrase typed into a plain ``ssh`` to the initrd."""
        host.reboot()
        await host.wait_for_stage("initrd", timeout=30)
        before = len(host.attempts)
        command = ["cryptsetup-askpass"]
        options: list[str] = []
        if flavour == "systemd":
            command = ["systemd-tty-ask-password-agent"]
            options = ["RequestTTY=force"]
        argv = self.world.lab.ssh_argv(host, initrd=True, options=options) + command
        started = time.time()
        proc = subprocess.Popen(  # noqa: ASYNC220 - the clock starts at the spawn
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        assert proc.stdin is not None
        proc.stdin.write((host.luks_passphrase or "").encode() + b"\n")
        proc.stdin.flush()
        await host.wait_until(lambda: len(host.attempts) > before, 30, "the answer")
        self.figures.add(f"{flavour}: answer → initrd, plain ssh", host.attempts[-1].at - started)
        proc.stdin.close()
        await asyncio.to_thread(proc.wait)
        await host.wait_for_stage("booted", timeout=30)

    async def costs(self, flavour: str, host: LabHost) -> None:
        """What one look at both ports and one pinned login to the initrd cost here."""
        machine = self.machine(flavour)
        host.reboot()
        await host.wait_for_stage("initrd", timeout=30)
        pins = Pins(system=host.system_host_key or "", initrd=host.initrd_host_key or "")
        target = Target(machine, pins, Reach(self.world.lab.operator_key, ssh_timeout=5.0))
        for _ in range(self.rounds):
            started = time.monotonic()
            await target.locate(timeout=5.0)
            self.figures.add(f"{flavour}: one look at both ports", time.monotonic() - started)
            started = time.monotonic()
            conn = await target.initrd()
            self.figures.add(f"{flavour}: one pinned SSH login", time.monotonic() - started)
            conn.close()
            await conn.wait_closed()


def _mentions(*texts: str) -> Callable[[RecordedRequest], bool]:
    def check(request: RecordedRequest) -> bool:
        text = str(request.params.get("text", ""))
        return all(t in text for t in texts)

    return check


def _initrd_up_at(host: LabHost) -> float:
    """The monotonic time the host's latest initrd sshd came up (from the lab's events)."""
    for event in reversed(host.events):
        at, _, what = event.partition(" ")
        if what.startswith("initrd (boot"):
            return float(at)
    raise LookupError(f"{host.name} never reached its initrd: {host.events}")


async def run_bench(rounds: int) -> Figures:
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="deploybot-bench-") as tmp:
        async with FakeTelegram() as tg:
            root = Path(tmp)
            rig = BotRig(tg=tg, root=root, env={"DEPLOYBOT_ADMINS": str(ADMIN)}, tuning=TUNING)
            world = make_world(lab, rig, root)
            hosts = {
                flavour: lab.start_installed_host(flavour, initrd=flavour) for flavour in FLAVOURS
            }
            for flavour, host in hosts.items():
                world.machine(flavour, host, unlock_timeout="60s", boot_timeout="60s")
            _ = world.op, world.admin
            await world.start()
            try:
                bench = Bench(world, rounds)
                await bench.run(hosts)
            finally:
                await rig.stop()
    return bench.figures


async def measure() -> tuple[list[Figure], dict[str, float]]:
    """For ``make bench``: each flavour's relay next to plain ssh, prompt delay next to a look."""
    rows = (await run_bench(5)).rows
    med = {name: statistics.median(values) for name, values in rows.items()}
    figures: list[Figure] = []
    for flavour in FLAVOURS:
        figures.append(
            Figure(
                f"{flavour}: passphrase message → initrd, bot",
                med[f"{flavour}: answer → initrd, bot"],
                "plain ssh … of the same passphrase",
                med[f"{flavour}: answer → initrd, plain ssh"],
            )
        )
        figures.append(
            Figure(
                f"{flavour}: initrd SSH up → prompt sent",
                med[f"{flavour}: initrd up → prompt sent"],
                "one look at both ports + one login",
                med[f"{flavour}: one look at both ports"] + med[f"{flavour}: one pinned SSH login"],
            )
        )
    return figures, {}


async def main(rounds: int) -> None:
    figures = await run_bench(rounds)
    print(f"deploybot unlock bench: {rounds} rounds per figure, lab hosts on loopback")
    print(figures.table())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
