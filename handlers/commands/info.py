"""Read-only commands: /start /help /whoami /machines /status /audit."""

from __future__ import annotations

import asyncio

from bot.chat.access import Access
from bot.chat.commands import Arg, CommandTable, Need, Right
from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.remote.fleet import Fleet
from bot.remote.pins import describe as describe_pins
from bot.remote.status import QuickStatus, quick_status
from handlers.plumbing.paging import Pager
from handlers.plumbing.registry import Call, command
from store import MachineState, Store
from store.health import HealthStore

AUDIT_ENTRIES = 200
# TCP looks of /status at a time: a fleet of hundreds is looked at in bounded batches.
STATUS_LOOKS = 64
INTRO = (
    "deploybot installs NixOS machines with nixos-anywhere, unlocks their LUKS disks from "
    "this chat when they boot, and watches them. /help lists what you may do."
)


def describe_machine(machine: Machine, known: MachineState) -> str:
    kind = "LUKS" if machine.luks else "plain disk"
    since = f" since {known.state_since[:16].replace('T', ' ')}" if known.state_since else ""
    return (
        f"• {machine.name} — {machine.host}, .#{machine.flake_attr}, {kind}, "
        f"state: {known.state}{since}"
    )


def describe_status(status: QuickStatus) -> str:
    m = status.machine
    lines = [describe_machine(m, status.known)]
    if not status.probed:
        return "\n".join([*lines, "  not probed (example inventory)"])
    lines.append(f"  ssh {m.host}:{m.ssh_port} {'open' if status.ssh_open else 'closed'}")
    if status.initrd_open is not None:
        lines.append(
            f"  initrd {m.host}:{m.initrd_port} {'open' if status.initrd_open else 'closed'}"
        )
    if status.known.detail:
        lines.append(f"  {status.known.detail}")
    return "\n".join(lines)


async def watch_lines(machine: Machine, health: HealthStore) -> list[str]:
    """What the watcher knows: the last check, the 7-day uptime share, the last reboot test."""
    check, share, test = await asyncio.gather(
        health.last_check(machine.name),
        health.uptime_share(machine.name),
        health.last_reboot_test(machine.name),
    )
    lines = []
    if check is not None:
        mark = "✓" if check.ok else "✗"
        lines.append(f"  last check {_when(check.at)}: {mark} {check.state}, {check.summary}")
    if share is not None:
        lines.append(f"  up {share * 100:.1f}% of probes over 7 days")
    if test is not None:
        verdict = "passed" if test.ok else f"stalled at {test.stage}"
        took = sum(test.stages.values())
        lines.append(
            f"  last reboot test {_when(test.started_at)}: {verdict} "
            f"({format_duration(took)}, {test.trigger})"
        )
    return lines


def needs_attention(status: QuickStatus, check_ok: bool | None) -> bool:
    """Not up, its SSH port closed, or its last health check failed."""
    if status.known.state != "up" or check_ok is False:
        return True
    return status.probed and not status.ssh_open


def status_header(states: list[str]) -> str:
    """The fleet in one line: how many machines are in each state, most first."""
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"Status of {len(states)} machines: " + ", ".join(f"{n} {s}" for s, n in ranked)


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ") + " UTC"


class InfoCommands:
    """What the bot knows, read-only."""

    def __init__(
        self,
        *,
        access: Access,
        store: Store,
        health: HealthStore,
        fleet: Fleet,
        pager: Pager,
        probes_enabled: bool = True,
    ) -> None:
        self.access = access
        self.pager = pager
        self.store = store
        self.health = health
        self.fleet = fleet
        self.probes_enabled = probes_enabled
        # Filled by the composition root once every family is declared.
        self.table = CommandTable(())

    @command("start", "what this bot does")
    async def start(self, call: Call) -> None:
        await call.reply(INTRO)

    @command("help", "the commands you may run")
    async def help(self, call: Call) -> None:
        lines = ["Commands you may run:"]
        for spec in self.table:
            if self.access.may_run(call.user.id, spec):
                lines.append(f"{spec.usage} — {spec.summary}")
        await call.reply("\n".join(lines))

    @command("whoami", "your Telegram user id and rights")
    async def whoami(self, call: Call) -> None:
        user = call.user
        if self.access.is_admin(user.id):
            rights = "admin (every machine)"
        else:
            names = ", ".join(m.name for m in self.access.machines_for(user.id))
            rights = f"operator of {names}"
        handle = f" (@{user.username})" if user.username else ""
        await call.reply(f"You are {user.id}{handle}: {rights}.")

    @command("machines", "the machines you may act on", needs=(Need.PRIVATE_CHAT,))
    async def machines(self, call: Call) -> None:
        machines = self.access.machines_for(call.user.id)
        if not machines:
            await call.reply("No machines in the inventory.")
            return
        known = await self.store.machines()
        lines = [describe_machine(m, known.get(m.name) or MachineState(m.name)) for m in machines]
        await self.pager.reply(call, lines, header=f"Machines ({len(machines)}):")

    @command(
        "status",
        "last known state and a quick probe",
        arg=Arg.OPTIONAL_MACHINE,
        right=Right.MACHINE,
        needs=(Need.PRIVATE_CHAT,),
    )
    async def status(self, call: Call) -> None:
        machines = [call.machine] if call.machine else self.access.machines_for(call.user.id)
        if not machines:
            await call.reply("No machines in the inventory.")
            return
        looks = asyncio.Semaphore(STATUS_LOOKS)

        async def look(m: Machine) -> QuickStatus:
            async with looks:
                target = self.fleet.unpinned(m)
                return await quick_status(target, self.store, probe=self.probes_enabled)

        statuses, watched, checks = await asyncio.gather(
            asyncio.gather(*(look(m) for m in machines)),
            asyncio.gather(*(watch_lines(m, self.health) for m in machines)),
            asyncio.gather(*(self.health.last_check(m.name) for m in machines)),
        )
        keys = await asyncio.gather(*(self.key_lines(m) for m in machines))
        blocks = [
            "\n".join([describe_status(s), *w, *k])
            for s, w, k in zip(statuses, watched, keys, strict=True)
        ]
        if len(machines) == 1:
            await self.pager.reply(call, blocks)
            return
        attention = [
            needs_attention(s, c.ok if c is not None else None)
            for s, c in zip(statuses, checks, strict=True)
        ]
        first = [b for b, a in zip(blocks, attention, strict=True) if a]
        rest = [b for b, a in zip(blocks, attention, strict=True) if not a]
        items = ([f"Needs attention ({len(first)}):", *first] if first else []) + (
            [f"Fine ({len(rest)}):", *rest] if rest else []
        )
        await self.pager.reply(call, items, header=status_header([s.known.state for s in statuses]))

    async def key_lines(self, machine: Machine) -> list[str]:
        """Which keys are pinned and from where (bot.remote.pins)."""
        return [f"  {line}" for line in describe_pins(machine, await self.fleet.pins(machine))]

    @command("audit", "the recent audit entries", right=Right.ADMIN, needs=(Need.PRIVATE_CHAT,))
    async def audit(self, call: Call) -> None:
        entries = await self.store.recent_audit(AUDIT_ENTRIES)
        lines = []
        for e in entries:
            if e.user_id is None:  # the bot itself: a schedule, a signal
                who = e.username or "bot"
            else:
                who = f"{e.user_id}" + (f" @{e.username}" if e.username else "")
            where = f" {e.machine}" if e.machine else ""
            why = f" ({e.detail})" if e.detail else ""
            lines.append(
                f"{e.at[5:19].replace('T', ' ')} {who} {e.action}{where}: {e.decision}{why}"
            )
        header = f"Last {len(entries)} audit entries (newest first):"
        await self.pager.reply(call, lines, header=header)
