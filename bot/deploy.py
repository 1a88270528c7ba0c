"""``/deploy`` and ``/reinstall``: the manual nixos-anywhere procedure as one careful job.

Each step stops the job at the first failure and says which step failed and why — the
shell script it replaces carried on after errors. Secrets (the disk passphrase, the host's
private key) live in ``Secret`` objects, reach nixos-anywhere through a pipe and the 0700
staging folder, and are wiped and removed as soon as nixos-anywhere exits.

nixos-anywhere never checks the target's host key and builds for minutes before its first
ssh (docs/nixos-anywhere.md), so the bot builds first, checks the key just before starting
it, hands it the built paths (``--store-paths``: it connects at once) and the confirmed key
(``GlobalKnownHostsFile``), and stops it the moment its ssh reports another key. Each of
its steps has a bound (``Tuning.step_timeouts``): ssh-copy-id and the reboot wait would
otherwise loop for ever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bot import staging
from bot.chat import ChatPort
from bot.durations import format_duration
from bot.inventory import Machine
from bot.jobs import JobCancelled, JobContext, JobFailed, Outcome
from bot.keys import fingerprint, generate_ed25519
from bot.nixos_anywhere import (
    DISK_KEY_FD_AUTO,
    NixosAnywhereError,
    NixosAnywhereStopped,
    OutputParser,
    Phase,
    PhaseChanged,
    build_argv,
    child_env,
    run_nixos_anywhere,
)
from bot.nixos_anywhere import build as nix_build
from bot.nixos_anywhere.output import HOST_KEY_CHANGED, clean_line
from bot.reboot_watch import BootTimeout, Seen, same_key, wait_for_boot
from bot.secret import Secret
from bot.services import STEP_TIMEOUTS, Services
from bot.sops import SopsError, decrypt_value
from bot.ssh import SshEndpoint, SshError, connect, fetch_host_key, run
from bot.target import (
    TargetFacts,
    is_nixos_installer,
    memory_verdict,
    parse_mem_total_mib,
    parse_os_release,
)
from store import Job, utcnow

log = logging.getLogger(__name__)

PREFLIGHT = "preflight"
CONFIRM = "confirmation"
DISK_KEY = "disk passphrase"
STAGING = "staging"
REMOUNT = "remount rw-store"
INSTALL = "nixos-anywhere"
REBOOT = "reboot"
HEALTH = "health"

# Called when a freshly installed LUKS machine sits in its initrd; returns a status line.
InitrdHandover = Callable[[Machine, JobContext], Awaitable[str]]


@dataclass
class Preflight:
    facts: TargetFacts
    host_key: str  # the key the target presented (an installer's, or the pinned system key)
    installed_system: bool


class Deployer:
    """Starts deploy jobs; one instance per bot."""

    def __init__(self, services: Services, on_initrd: InitrdHandover | None = None) -> None:
        self.s = services
        self.on_initrd = on_initrd

    @property
    def chat(self) -> ChatPort:
        return self.s.chat

    async def start(self, machine: Machine, *, user_id: int, chat_id: int, reinstall: bool) -> Job:
        """Create the job (JobConflict when the machine is busy) and run it in the background."""
        phases = [PREFLIGHT, CONFIRM]
        if machine.luks:
            phases.append(DISK_KEY)
        phases += [STAGING, REMOUNT, INSTALL, REBOOT, HEALTH]
        kind = "reinstall" if reinstall else "deploy"

        async def work(ctx: JobContext) -> Outcome:
            return await self._pipeline(
                ctx, machine, user_id=user_id, chat_id=chat_id, reinstall=reinstall
            )

        return await self.s.jobs.start(
            kind=kind,
            title=f"{kind.capitalize()} {machine.name}",
            machine=machine.name,
            user_id=user_id,
            chat_id=chat_id,
            phases=phases,
            work=work,
        )

    # -- the pipeline ------------------------------------------------------------------------

    async def _pipeline(
        self, ctx: JobContext, machine: Machine, *, user_id: int, chat_id: int, reinstall: bool
    ) -> Outcome:
        secrets: list[Secret] = []
        staged_root: Path | None = None
        try:
            await ctx.enter(PREFLIGHT)
            pre = await self._preflight(ctx, machine, reinstall=reinstall)
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
                staging.make_staging_dir, self.s.settings.state_dir, ctx.job.id
            )
            host_key, initrd_key = await self._stage(ctx, machine, staged_root, secrets)
            if pre.facts.installer and machine.rw_store_size:
                await ctx.enter(REMOUNT)
                await self._remount(ctx, machine, pre)
            else:
                ctx.skip(REMOUNT)
            await ctx.enter(INSTALL)
            built = await self._build(ctx, machine)
            await self._still_confirmed_target(ctx, machine, pre)
            try:
                await self._nixos_anywhere(ctx, machine, staged_root, disk_key, pre, built)
            finally:
                # The host's and the initrd's private keys: gone the moment it exits, not
                # after the reboot and an unlock wait.
                for secret in secrets:
                    secret.wipe()
                await asyncio.to_thread(staging.remove, staged_root)
                staged_root = None
            await ctx.enter(REBOOT)
            status = await self._follow_reboot(ctx, machine, host_key, initrd_key)
            await self.s.store.update_machine(machine.name, installed_at=utcnow())
            return Outcome(summary=status)
        finally:
            for secret in secrets:
                secret.wipe()
            if staged_root is not None:
                await asyncio.to_thread(staging.remove, staged_root)

    def _endpoint(
        self, machine: Machine, host_key: str | None, *, user: str = "root"
    ) -> SshEndpoint:
        return SshEndpoint(
            host=machine.host,
            port=machine.ssh_port,
            user=user,
            client_key=self.s.settings.ssh_key,
            host_key=host_key,
        )

    async def _preflight(self, ctx: JobContext, machine: Machine, *, reinstall: bool) -> Preflight:
        timeout = self.s.tuning.ssh_timeout
        try:
            presented = await fetch_host_key(machine.host, machine.ssh_port, timeout=timeout)
        except SshError as exc:
            raise ctx.fail(f"cannot reach {machine.host}:{machine.ssh_port}: {exc}") from None
        known = await self.s.store.machine(machine.name)
        installed_system = bool(known.host_key) and same_key(presented, known.host_key)
        if installed_system and not reinstall:
            raise ctx.fail(
                f"{machine.name} is installed: it answers with its pinned host key. To erase "
                f"and reinstall it, use /reinstall {machine.name}"
            )
        ctx.output(f"{machine.host}:{machine.ssh_port} presents {fingerprint(presented)}")
        try:
            conn = await connect(self._endpoint(machine, presented), timeout=timeout)
        except SshError as exc:
            raise ctx.fail(f"cannot log in as root@{machine.host}: {exc}") from None
        async with conn:
            try:
                os_release = await run(conn, ["cat", "/etc/os-release"], timeout=timeout)
                meminfo = await run(conn, ["cat", "/proc/meminfo"], timeout=timeout)
            except SshError as exc:
                raise ctx.fail(f"could not read the target's facts: {exc}") from None
        if not meminfo.ok:
            raise ctx.fail("could not read /proc/meminfo on the target")
        release = parse_os_release(os_release.stdout_text)
        try:
            mem_mib = parse_mem_total_mib(meminfo.stdout_text)
        except ValueError as exc:
            raise ctx.fail(str(exc)) from None
        facts = TargetFacts(
            os_id=release.get("ID", "unknown"),
            os_name=release.get("PRETTY_NAME", ""),
            installer=is_nixos_installer(release),
            mem_mib=mem_mib,
            rw_store="",
        )
        ctx.output(f"target: {facts.describe()}")
        refusal, warning = memory_verdict(facts)
        if refusal:
            raise ctx.fail(refusal)
        if warning:
            await ctx.note(warning)
        await self.s.store.update_machine(machine.name, installer_host_key=presented)
        return Preflight(facts=facts, host_key=presented, installed_system=installed_system)

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
        timeout = self.s.tuning.confirm_timeout
        key_line = (
            f"its pinned host key {fingerprint(pre.host_key)} ✓"
            if pre.installed_system
            else f"installer host key {fingerprint(pre.host_key)} (first contact: compare it "
            "with the console of your VPS if you can)"
        )
        summary = (
            f"⚠️ This erases the whole disk of {machine.name}.\n"
            f"Target: root@{machine.host}:{machine.ssh_port}\n"
            f"Flake: {self.s.settings.flake}#{machine.flake_attr}\n"
            f"Answers with {key_line}\n"
            f"System: {pre.facts.describe()}\n"
            f"Disk: {'LUKS-encrypted' if machine.luks else 'not encrypted'}"
        )
        if reinstall:
            answer = await self.chat.ask_text(
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
            confirmation = self.s.confirmations.open(user_id)
            ref = await self.chat.post(
                chat_id,
                f"{summary}\n\nConfirm within {format_duration(timeout)}.",
                buttons=confirmation.buttons(f"Erase and install {machine.name}"),
            )
            answer_yes = await self.s.confirmations.wait(confirmation, timeout)
            verdict = {True: "✅ confirmed", False: "🚫 cancelled", None: "⌛ expired"}[answer_yes]
            if ref is not None:
                await self.chat.edit(ref, f"{summary}\n\n{verdict}")
            if answer_yes is None:
                raise JobCancelled("the confirmation expired; nothing was changed")
            if not answer_yes:
                raise JobCancelled("cancelled at the confirmation; nothing was changed")
        await self.s.store.audit(
            user_id=user_id,
            username="",
            action="reinstall" if reinstall else "deploy",
            machine=machine.name,
            decision="confirmed",
            detail=f"job {ctx.job.id}, target key {fingerprint(pre.host_key)}",
        )

    async def _disk_passphrase(self, ctx: JobContext, machine: Machine, *, user_id: int) -> Secret:
        if machine.luks_passphrase_secret and machine.secrets_file is not None:
            ctx.output(f"disk passphrase from sops key {machine.luks_passphrase_secret}")
            return await self._sops(ctx, machine.secrets_file, machine.luks_passphrase_secret)
        timeout = self.s.tuning.answer_timeout
        first = await self.chat.ask_secret(
            user_id,
            f"New disk passphrase for {machine.name}? I delete your message at once and never "
            "store it. (Telegram keeps chats on its servers: deleting is hygiene, not secrecy.)",
            purpose=f"disk passphrase {machine.name}",
            timeout=timeout,
        )
        if first is None:
            raise JobCancelled("no disk passphrase was given; nothing was changed")
        ctx.hide(first)
        second = await self.chat.ask_secret(
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
        env = {**os.environ, **self.s.settings.sops_env}
        try:
            return await decrypt_value(self.s.settings.sops, file, key, env=env)
        except SopsError as exc:
            raise ctx.fail(str(exc)) from None
        except ValueError as exc:
            raise ctx.fail(f"{key!r} cannot be read from {file}: {exc}") from None

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
        await self.s.store.update_machine(
            machine.name,
            host_key=staged.host_public_key,
            initrd_host_key=staged.initrd_public_key,
        )
        ctx.output(f"machine-id {staged.machine_id}")
        ctx.output(f"host key {fingerprint(staged.host_public_key)} pinned")
        ctx.output(f"initrd key {fingerprint(staged.initrd_public_key)} pinned")
        return staged.host_public_key, staged.initrd_public_key

    async def _remount(self, ctx: JobContext, machine: Machine, pre: Preflight) -> None:
        timeout = self.s.tuning.ssh_timeout
        argv = ["mount", "-o", f"remount,size={machine.rw_store_size}", "/nix/.rw-store"]
        try:
            conn = await connect(self._endpoint(machine, pre.host_key), timeout=timeout)
            async with conn:
                result = await run(conn, argv, timeout=timeout)
        except SshError as exc:
            raise ctx.fail(f"could not remount /nix/.rw-store: {exc}") from None
        if not result.ok:
            raise ctx.fail(
                f"mount -o remount,size={machine.rw_store_size} /nix/.rw-store failed "
                f"(exit {result.exit_status}): {result.stderr_text.strip()[:200]}"
            )
        ctx.output(f"/nix/.rw-store remounted with size={machine.rw_store_size}")

    async def _still_confirmed_target(
        self, ctx: JobContext, machine: Machine, pre: Preflight
    ) -> None:
        """The disk erased must belong to the machine whose key the user confirmed.

        nixos-anywhere does not check host keys, and the confirmation may have waited for
        minutes: a target that now answers with another key is not the one confirmed.
        """
        where = f"{machine.host}:{machine.ssh_port}"
        try:
            presented = await fetch_host_key(
                machine.host, machine.ssh_port, timeout=self.s.tuning.ssh_timeout
            )
        except SshError as exc:
            raise ctx.fail(f"cannot reach {where} any more: {exc}") from None
        if not same_key(presented, pre.host_key):
            raise ctx.fail(
                f"the host key of {where} changed since you confirmed "
                f"{fingerprint(pre.host_key)}: it now presents {fingerprint(presented)}. "
                f"Nothing was installed; run /deploy {machine.name} again to confirm the new key"
            )

    async def _build(self, ctx: JobContext, machine: Machine) -> tuple[str, str]:
        """``nix build`` the disko script and the system, bounded like every step."""
        settings = self.s.settings
        try:
            argv = nix_build.build_argv(settings.nix, flake=settings.flake, attr=machine.flake_attr)
        except ValueError as exc:
            raise ctx.fail(f"refusing to build: {exc}") from None
        ctx.progress.line(f"{INSTALL}: building {machine.flake_attr}")
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(ctx.log.write(line)[:500])
            del lines[:-200]

        try:
            code = await run_nixos_anywhere(
                argv,
                disk_key=None,
                on_line=on_line,
                env=child_env(),
                cwd=None,
                timeout=self.s.tuning.build_timeout,
                kill_grace=self.s.tuning.stop_grace,
            )
        except NixosAnywhereError as exc:
            text = str(exc).replace("nixos-anywhere", "nix build")
            raise ctx.fail(f"building {machine.flake_attr}: {text}") from None
        if code != 0:
            last = next((clean_line(x) for x in reversed(lines) if clean_line(x)), "no output")
            raise ctx.fail(f"nix build of {machine.flake_attr} failed (exit {code}): {last[:300]}")
        try:
            paths = nix_build.store_paths(lines)
        except ValueError as exc:
            raise ctx.fail(f"nix build of {machine.flake_attr}: {exc}") from None
        ctx.output(f"built {paths[0]} and {paths[1]}")
        return paths

    async def _nixos_anywhere(
        self,
        ctx: JobContext,
        machine: Machine,
        root: Path,
        disk_key: Secret | None,
        pre: Preflight,
        built: tuple[str, str],
    ) -> None:
        settings = self.s.settings
        pinned = await asyncio.to_thread(_write_known_hosts, root, machine, pre.host_key)
        try:
            argv = build_argv(
                list(settings.nixos_anywhere),
                flake=settings.flake,
                attr=machine.flake_attr,
                target_host=machine.host,
                ssh_port=machine.ssh_port,
                ssh_key=settings.ssh_key,
                extra_files=root,
                disk_key_fd=DISK_KEY_FD_AUTO if disk_key is not None else None,
                ssh_options=("LogLevel=ERROR", f"GlobalKnownHostsFile={pinned}"),
                store_paths=built,
            )
        except ValueError as exc:
            raise ctx.fail(f"refusing to run nixos-anywhere: {exc}") from None
        parser = OutputParser()
        bounds = {**STEP_TIMEOUTS, **self.s.tuning.step_timeouts}
        step = _Step("start", "starting", time.monotonic())

        def on_line(line: str) -> None:
            logged = ctx.log.write(line)
            if HOST_KEY_CHANGED in logged and _before_kexec(parser.phase):
                raise NixosAnywhereStopped(
                    f"{machine.host}:{machine.ssh_port} answered with another host key than "
                    f"the confirmed {fingerprint(pre.host_key)} (REMOTE HOST IDENTIFICATION "
                    "HAS CHANGED): another machine may have taken the address. nixos-anywhere "
                    "was stopped at its first, read-only login; nothing was written. Run "
                    f"/deploy {machine.name} again to confirm the key it presents now"
                )
            for event in parser.feed(logged):
                if isinstance(event, PhaseChanged):
                    ctx.log.write(f"--- {event.phase.value}")
            label = _step_label(logged)
            if label:
                step.begin(parser.phase.value if parser.phase else "start", label)
                show()

        def show() -> None:
            took = format_duration(time.monotonic() - step.started)
            ctx.progress.line(f"{INSTALL}: {step.text} ({took})")

        def check() -> str | None:
            show()
            bound = bounds.get(step.phase, bounds["start"])
            if time.monotonic() - step.started <= bound:
                return None
            return (
                f'nixos-anywhere stalled at "{step.text}": no progress for '
                f"{format_duration(bound)}; it was stopped"
            )

        try:
            code = await run_nixos_anywhere(
                argv,
                disk_key=disk_key,
                on_line=on_line,
                env=child_env(),
                cwd=None,
                timeout=self.s.tuning.nixos_anywhere_timeout,
                redact_also=ctx.log.secrets,
                kill_grace=self.s.tuning.stop_grace,
                check=check,
                check_interval=min(1.0, self.s.tuning.progress_interval),
            )
        except NixosAnywhereStopped as exc:
            where = parser.phase.value if parser.phase else "start"
            raise JobFailed(exc.reason, phase=f"{INSTALL} ({where})") from None
        except NixosAnywhereError as exc:
            raise ctx.fail(str(exc)) from None
        outcome = parser.judge(code)
        if not outcome.ok:
            raise JobFailed(outcome.reason, phase=f"{INSTALL} ({outcome.failed_phase or 'start'})")

    async def _follow_reboot(
        self, ctx: JobContext, machine: Machine, host_key: str, initrd_key: str
    ) -> str:
        ctx.output(
            f"waiting up to {format_duration(machine.boot_timeout)} for {machine.name} to boot"
        )
        try:
            sighting = await wait_for_boot(
                machine,
                host_key=host_key,
                initrd_key=initrd_key,
                timeout=machine.boot_timeout,
                poll=self.s.tuning.reboot_poll,
            )
        except BootTimeout as exc:
            seen = exc.last
            detail = (
                f"; {seen.where} answered with another key ({fingerprint(seen.presented)})"
                if seen.seen is Seen.WRONG_KEY
                else ""
            )
            within = format_duration(machine.boot_timeout)
            raise ctx.fail(f"{machine.name} did not come back within {within}{detail}") from None
        if sighting.seen is Seen.INITRD:
            await self.s.store.update_machine(machine.name, state="initrd")
            ctx.output(f"{machine.name} is in its initrd ({fingerprint(initrd_key)} verified)")
            if self.on_initrd is None:
                ctx.skip(HEALTH)
                return f"installed; {machine.name} is waiting for unlock in its initrd"
            status = await self.on_initrd(machine, ctx)
            await ctx.enter(HEALTH)
            return f"{status}; {await self._health(ctx, machine, host_key)}"
        await ctx.enter(HEALTH)
        return await self._health(ctx, machine, host_key)

    async def _health(self, ctx: JobContext, machine: Machine, host_key: str) -> str:
        timeout = self.s.tuning.ssh_timeout
        try:
            conn = await connect(
                self._endpoint(machine, host_key, user=machine.ssh_user), timeout=timeout
            )
            async with conn:
                state = await run(conn, ["systemctl", "is-system-running"], timeout=timeout)
                failed = await run(
                    conn, ["systemctl", "--failed", "--no-legend", "--plain"], timeout=timeout
                )
        except SshError as exc:
            raise ctx.fail(f"the installed system does not answer as expected: {exc}") from None
        running = state.stdout_text.strip() or "unknown"
        units = [line.split()[0] for line in failed.stdout_text.splitlines() if line.strip()]
        await self.s.store.update_machine(machine.name, state="up", detail=f"system {running}")
        ctx.output(f"system: {running}; failed units: {', '.join(units) or 'none'}")
        if units:
            return f"installed and up, {running}: failed {', '.join(units[:5])}"
        return f"installed and up, {running}"


class _Step:
    """The nixos-anywhere step running now, and since when (for its bound and display)."""

    def __init__(self, phase: str, text: str, started: float) -> None:
        self.phase, self.text, self.started = phase, text, started

    def begin(self, phase: str, text: str) -> None:
        self.phase, self.text, self.started = phase, text, time.monotonic()


def _step_label(line: str) -> str:
    """The text of a ``### step ###`` line, or ""."""
    text = clean_line(line)
    if text.startswith("### ") and text.endswith(" ###") and len(text) > 8:
        return text[4:-4].strip()[:200]
    return ""


def _before_kexec(phase: Phase | None) -> bool:
    """Whether the run is still at its first logins: after a kexec the installer may come
    up with a host key of its own, which is expected."""
    return phase in (None, Phase.UPLOAD_KEYS, Phase.FACTS)


def _write_known_hosts(root: Path, machine: Machine, host_key: str) -> Path:
    """The confirmed key as a known_hosts file (0600), beside the staged files, not in
    them: it must not land on the target."""
    path = root.parent / f"{root.name}.known_hosts"
    host = machine.host if machine.ssh_port == 22 else f"[{machine.host}]:{machine.ssh_port}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{host} {host_key.strip()}\n")
    return path
