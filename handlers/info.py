"""Read-only commands: /start /help /whoami /machines /status /audit."""

from __future__ import annotations

import asyncio

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.chat.commands import COMMANDS, CommandError, ParsedCommand, parse_command
from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.flows.services import Services
from bot.remote.status import QuickStatus, quick_status
from handlers.common import sender
from store import MachineState
from store.health import HealthStore

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


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ") + " UTC"


class InfoHandlers:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.health = HealthStore(services.store)

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, _ = sender(update)
        await message.reply_text(INTRO)

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = sender(update)
        uid = user.id
        lines = ["Commands you may run:"]
        for spec in COMMANDS.values():
            if spec.name in self.s.commands and self.s.access.may_run(uid, spec):
                lines.append(f"{spec.usage} — {spec.summary}")
        await message.reply_text("\n".join(lines))

    async def whoami(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = sender(update)
        if self.s.access.is_admin(user.id):
            rights = "admin (every machine)"
        else:
            names = ", ".join(m.name for m in self.s.access.machines_for(user.id))
            rights = f"operator of {names}"
        handle = f" (@{user.username})" if user.username else ""
        await message.reply_text(f"You are {user.id}{handle}: {rights}.")

    async def machines(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = sender(update)
        machines = self.s.access.machines_for(user.id)
        if not machines:
            await message.reply_text("No machines in the inventory.")
            return
        known = await self.s.store.machines()
        lines = [f"Machines ({len(machines)}):"]
        lines += [describe_machine(m, known.get(m.name) or MachineState(m.name)) for m in machines]
        await message.reply_text("\n".join(lines))

    async def status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = sender(update)
        parsed = self._parse(update)
        if parsed is not None and parsed.machine is not None:
            machine = self.s.inventory.get(parsed.machine)
            assert machine is not None  # the gate refused unknown machines
            machines = [machine]
        else:
            machines = self.s.access.machines_for(user.id)
        if not machines:
            await message.reply_text("No machines in the inventory.")
            return
        statuses = await asyncio.gather(
            *(quick_status(m, self.s.store, probe=self.s.probes_enabled) for m in machines)
        )
        watched = await asyncio.gather(*(watch_lines(m, self.health) for m in machines))
        await message.reply_text(
            "\n".join(
                "\n".join([describe_status(s), *w]) for s, w in zip(statuses, watched, strict=True)
            )
        )

    async def audit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, _ = sender(update)
        entries = await self.s.store.recent_audit(20)
        lines = [f"Last {len(entries)} audit entries (newest first):"]
        for e in entries:
            who = f"{e.user_id}" + (f" @{e.username}" if e.username else "")
            where = f" {e.machine}" if e.machine else ""
            why = f" ({e.detail})" if e.detail else ""
            lines.append(
                f"{e.at[5:19].replace('T', ' ')} {who} {e.action}{where}: {e.decision}{why}"
            )
        await message.reply_text("\n".join(lines))

    def _parse(self, update: Update) -> ParsedCommand | None:
        text = update.effective_message.text if update.effective_message else None
        try:
            return parse_command(text or "")
        except CommandError:
            return None


def register(application: Application, services: Services) -> None:  # type: ignore[type-arg]
    h = InfoHandlers(services)
    for name, callback in (
        ("start", h.start),
        ("help", h.help),
        ("whoami", h.whoami),
        ("machines", h.machines),
        ("status", h.status),
        ("audit", h.audit),
    ):
        application.add_handler(CommandHandler(name, callback))
        services.commands.add(name)
