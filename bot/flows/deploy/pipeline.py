"""``/deploy`` and ``/reinstall``: the manual nixos-anywhere procedure as one careful job.

preflight → confirmation → disk passphrase → staging → install → reboot → health. Each
step stops the job at the first failure and says which step failed and why (the shell
script it replaces carried on after errors). Secrets (the disk passphrase, the host's
private key) live in ``Secret`` objects, reach nixos-anywhere through a pipe and the 0700
staging folder, and are wiped and removed as soon as nixos-anywhere exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from bot.config.inventory import Machine
from bot.core.durations import format_duration
from bot.core.keys import fingerprint, generate_ed25519
from bot.core.poll import PollTimeout, poll_until
from bot.core.secret import Secret
from bot.core.sops import SopsError
from bot.flows.basics import Basics
from bot.flows.deploy import staging
from bot.flows.deploy.approval import approvers, second_approval
from bot.flows.deploy.install import INSTALL, Installer
from bot.flows.deploy.preflight import Preflight, preflight, remount, still_confirmed
from bot.jobs import staging as staging_dir
from bot.jobs.context import JobCancelled, JobContext, Outcome, require_yes
from bot.remote.identity import NotThisMachine, address_of
from bot.remote.place import Location, Place
from bot.remote.ssh import SshError
from bot.remote.target import Target
from store import Job, utcnow

log = logging.getLogger(__name__)

PREFLIGHT = "preflight"
CONFIRM = "confirmation"
DISK_KEY = "disk passphrase"
STAGING = "staging"
REMOUNT = "remount rw-store"
REBOOT = "reboot"
HEALTH = "health"

# Called when a freshly installed LUKS machine sits in its initrd; returns a status line.
InitrdHandover = Callable[[Machine, JobContext], Awaitable[str]]


class Deployer:
    """Starts deploy jobs; one instance per bot."""

    def __init__(self, basics: Basics, *, on_initrd: InitrdHandover | None = None) -> None:
        self.basics = basics
        # The inventory in force: read at each use, so a reload is seen at once.
        self.current = basics.current
        self.jobs, self.fleet, self.store = basics.jobs, basics.fleet, basics.store
        self.chat, self.asker, self.sops = basics.chat, basics.asker, basics.sops
        self.settings, self.tuning = basics.settings, basics.tuning
        self.on_initrd = on_initrd
        self.installer = Installer(basics.settings, basics.tuning)

    async def start(self, machine: Machine, *, user_id: int, chat_id: int, reinstall: bool) -> Job:
        """Create the job (JobConflict when the machine is busy) and run it in the background."""
        phases = [PREFLIGHT, CONFIRM]
        if machine.luks:
            phases.append(DISK_KEY)
        phases += [STAGING, REMOUNT, INSTALL, REBOOT, HEALTH]
        kind = "reinstall" if reinstall else "deploy"

        return await self.jobs.start(
            kind=kind,
            title=f"{kind.capitalize()} {machine.name}",
            machine=machine.name,
            user_id=user_id,
            chat_id=chat_id,
            phases=phases,
            work=partial(
                self._pipeline,
                machine=machine,
                user_id=user_id,
                chat_id=chat_id,
                reinstall=reinstall,
            ),
        )

    # -- the pipeline ------------------------------------------------------------------------

    async def _pipeline(
        self, ctx: JobContext, machine: Machine, *, user_id: int, chat_id: int, reinstall: bool
    ) -> Outcome:
        secrets: list[Secret] = []
        staged_root: Path | None = None
        try:
            await ctx.enter(PREFLIGHT)
            with ctx.failing("", NotThisMachine):
                address = await address_of(machine, self.current.inventory)
            # Every connection of the job, nixos-anywhere's included, goes to this address.
            target = await self.fleet.target(dataclasses.replace(machine, host=address))
            timeout = self.tuning.ssh_timeout
            pre = await preflight(
                ctx,
                target,
                self.fleet,
                self.current.inventory,
                self.store,
                reinstall=reinstall,
                timeout=timeout,
            )
            await ctx.enter(CONFIRM)
            await self._confirm(
                ctx, machine, pre, user_id=user_id, chat_id=chat_id, reinstall=reinstall
            )
            disk_key: Secret | None = None
            if machine.luks:
                await ctx.enter(DISK_KEY)
                disk_key = await self._disk_passphrase(ctx, machine, user_id=user_id)
                secrets.append(disk_key)
                ctx.hide(disk_key)
            await ctx.enter(STAGING)
            staged_root = await asyncio.to_thread(
                staging_dir.make_staging_dir, self.settings.state_dir, ctx.job.id
            )
            host_key, initrd_key = await self._stage(ctx, machine, staged_root, secrets)
            if pre.facts.installer and machine.rw_store_size:
                await ctx.enter(REMOUNT)
                await remount(ctx, target, pre, timeout=timeout)
            else:
                ctx.skip(REMOUNT)
            await ctx.enter(INSTALL)
            built = await self.installer.build(ctx, machine)
            await still_confirmed(ctx, target, pre, timeout=timeout)
            try:
                await self.installer.run(
                    ctx,
                    target.machine,
                    staged_root,
                    disk_key,
                    confirmed_key=pre.host_key,
                    built=built,
                )
            finally:
                # The host's and the initrd's private keys: gone the moment it exits, not
                # after the reboot and an unlock wait.
                for secret in secrets:
                    secret.wipe()
                await asyncio.to_thread(staging_dir.remove, staged_root)
                staged_root = None
            await ctx.enter(REBOOT)
            installed = target.with_pins(system=host_key, initrd=initrd_key)
            status = await self._follow_reboot(ctx, installed)
            await self.store.update_machine(machine.name, installed_at=utcnow())
            return Outcome(summary=status)
        finally:
            for secret in secrets:
                secret.wipe()
            if staged_root is not None:
                await asyncio.to_thread(staging_dir.remove, staged_root)

    async def _confirm(
        self,
        ctx: JobContext,
        machine: Machine,
        pre: Preflight,
        *,
        user_id: int,
        chat_id: int,
        reinstall: bool,
    ) -> None:
        timeout = self.tuning.confirm_timeout
        where = machine.host
        if pre.address and pre.address != machine.host:
            where = f"{machine.host} ({pre.address})"
        key_line = (
            f"its pinned host key {fingerprint(pre.host_key)} ✓"
            if pre.installed_system
            else f"installer host key {fingerprint(pre.host_key)} (first contact: compare it "
            "with the console of your VPS if you can)"
        )
        summary = (
            f"⚠️ This erases the whole disk of {machine.name}.\n"
            f"Target: root@{where}:{machine.ssh_port}\n"
            f"Flake: {self.settings.flake}#{machine.flake_attr}\n"
            f"Answers with {key_line}\n"
            f"System: {pre.facts.describe()}\n"
            f"Disk: {'LUKS-encrypted' if machine.luks else 'not encrypted'}"
        )
        if reinstall:
            answer = await self.asker.ask_text(
                user_id,
                f"{summary}\n\nTo reinstall, type the machine's name ({machine.name}) "
                f"within {format_duration(timeout)}.",
                purpose=f"reinstall {machine.name}",
                timeout=timeout,
            )
            if answer is None:
                raise JobCancelled("not confirmed in time; nothing was changed")
            if answer.strip() != machine.name:
                raise JobCancelled("the typed name did not match; nothing was changed")
        else:
            verdict = await self.asker.confirm(
                chat_id,
                user_id,
                f"{summary}\n\nConfirm within {format_duration(timeout)}.",
                yes=f"Erase and install {machine.name}",
                timeout=timeout,
            )
            require_yes(verdict)
        await self.store.audit(
            user_id=user_id,
            username="",
            action="reinstall" if reinstall else "deploy",
            machine=machine.name,
            decision="confirmed",
            detail=f"job {ctx.job.id}, target key {fingerprint(pre.host_key)}",
        )
        if machine.erase_approval:
            await ctx.note("waiting for a second operator or admin to approve (erase_approval)")
            approver = await second_approval(
                asker=self.asker,
                store=self.store,
                machine=machine,
                people=approvers(machine, self.settings.admins, user_id),
                requester=str(user_id),
                summary=summary,
                job_id=ctx.job.id,
                timeout=timeout,
            )
            ctx.output(f"erasing approved by {approver}")

    async def _disk_passphrase(self, ctx: JobContext, machine: Machine, *, user_id: int) -> Secret:
        if machine.luks_passphrase_secret and machine.secrets_file is not None:
            ctx.output(f"disk passphrase from sops key {machine.luks_passphrase_secret}")
            return await self._sops(ctx, machine.secrets_file, machine.luks_passphrase_secret)
        timeout = self.tuning.answer_timeout
        first = await self.asker.ask_secret(
            user_id,
            f"New disk passphrase for {machine.name}? I delete your message at once and never "
            "store it. (Telegram keeps chats on its servers: deleting is hygiene, not secrecy.)",
            purpose=f"disk passphrase {machine.name}",
            timeout=timeout,
        )
        if first is None:
            raise JobCancelled("no disk passphrase was given; nothing was changed")
        ctx.hide(first)
        second = await self.asker.ask_secret(
            user_id,
            f"Type the disk passphrase for {machine.name} again.",
            purpose=f"disk passphrase {machine.name} (again)",
            timeout=timeout,
        )
        if second is None:
            first.wipe()
            raise JobCancelled("the passphrase was not repeated; nothing was changed")
        try:
            if not first.matches(second):
                first.wipe()
                raise ctx.fail("the two passphrases differ; nothing was changed")
            if not first.reveal().strip():
                first.wipe()
                raise ctx.fail("the passphrase is empty; nothing was changed")
        finally:
            second.wipe()
        await self.chat.post(
            user_id, f"Passphrase for {machine.name} received; both messages deleted."
        )
        return first

    async def _sops(self, ctx: JobContext, file: Path, key: str) -> Secret:
        with (
            ctx.failing("", SopsError),
            ctx.failing(f"{key!r} cannot be read from {file}", ValueError),
        ):
            return await self.sops.value(file, key)

    async def _stage(
        self, ctx: JobContext, machine: Machine, root: Path, secrets: list[Secret]
    ) -> tuple[str, str]:
        if machine.host_key_secret and machine.secrets_file is not None:
            host_key = await self._sops(ctx, machine.secrets_file, machine.host_key_secret)
            ctx.output(f"host key from sops key {machine.host_key_secret}")
        else:
            host_key = generate_ed25519(comment=f"root@{machine.name}").private
            await ctx.note("no host_key_secret: generated a new host key (sops-nix cannot use it)")
        secrets.append(host_key)
        ctx.hide(host_key)
        try:
            staged = await asyncio.to_thread(
                staging.stage,
                root,
                persist_dir=machine.persist_dir,
                host_key=host_key,
                machine=machine.name,
            )
        except ValueError as exc:
            raise ctx.fail(f"the host key from sops is unusable: {exc}") from None
        host_key.wipe()
        await self.fleet.pin(
            machine, system=staged.host_public_key, initrd=staged.initrd_public_key
        )
        ctx.output(f"machine-id {staged.machine_id}")
        ctx.output(f"host key {fingerprint(staged.host_public_key)} pinned")
        ctx.output(f"initrd key {fingerprint(staged.initrd_public_key)} pinned")
        return staged.host_public_key, staged.initrd_public_key

    async def _follow_reboot(self, ctx: JobContext, target: Target) -> str:
        machine = target.machine
        within = format_duration(machine.boot_timeout)
        ctx.output(f"waiting up to {within} for {machine.name} to boot")
        wrong: list[Location] = []

        async def look() -> Location:
            seen = await target.locate()
            if seen.place is Place.WRONG_KEY:
                wrong.append(seen)  # kept so a timeout can say "answered with another key"
            return seen

        try:
            seen = await poll_until(
                look,
                lambda s: s.place in (Place.SYSTEM, Place.INITRD),
                timeout=machine.boot_timeout,
                interval=target.reach.poll,
            )
        except PollTimeout:
            detail = (
                f"; {wrong[-1].where} answered with another key "
                f"({fingerprint(wrong[-1].presented)})"
                if wrong
                else ""
            )
            raise ctx.fail(f"{machine.name} did not come back within {within}{detail}") from None
        if seen.place is Place.INITRD:
            await self.store.update_machine(machine.name, state=Place.INITRD)
            ctx.output(
                f"{machine.name} is in its initrd ({fingerprint(target.pins.initrd)} verified)"
            )
            if self.on_initrd is None:
                ctx.skip(HEALTH)
                return f"installed; {machine.name} is waiting for unlock in its initrd"
            status = await self.on_initrd(machine, ctx)
            await ctx.enter(HEALTH)
            return f"{status}; {await self._health(ctx, target)}"
        await ctx.enter(HEALTH)
        return await self._health(ctx, target)

    async def _health(self, ctx: JobContext, target: Target) -> str:
        with ctx.failing("the installed system does not answer as expected", SshError):
            conn = await target.system()
            async with conn:
                health = await target.read_health(conn)
        running, units = health.system, health.failed_units
        await self.store.update_machine(target.name, state=Place.SYSTEM, detail=f"system {running}")
        ctx.output(f"system: {running}; failed units: {', '.join(units) or 'none'}")
        if units:
            return f"installed and up, {running}: failed {', '.join(units[:5])}"
        return f"installed and up, {running}"
