"""The install step: build first, check the key, then nixos-anywhere pinned to it, bounded.

nixos-anywhere never checks the target's host key and builds for minutes before its first
ssh (docs/nixos-anywhere.md), so the bot builds first, checks the key just before starting
it, hands it the built paths (``--store-paths``: it connects at once) and the confirmed key
(``GlobalKnownHostsFile``), and stops it the moment its ssh reports another key. Each of
its steps has a bound (``Tuning.step_timeouts``): ssh-copy-id and the reboot wait would
otherwise loop for ever.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bot.config.inventory import Machine
from bot.config.settings import Settings
from bot.config.tuning import STEP_TIMEOUTS, Tuning
from bot.core.durations import format_duration
from bot.core.keys import fingerprint
from bot.core.secret import Secret
from bot.flows.deploy.nixos_anywhere import (
    DISK_KEY_FD_AUTO,
    NixosAnywhereError,
    NixosAnywhereStopped,
    OutputParser,
    Phase,
    PhaseChanged,
    build_argv,
    run_nixos_anywhere,
)
from bot.flows.deploy.nixos_anywhere.output import HOST_KEY_CHANGED, clean_line
from bot.jobs.context import JobContext, JobFailed
from bot.remote import nix
from bot.remote.nix import child_env

INSTALL = "nixos-anywhere"
#: What nixos-anywhere installs, built first in this order (docs/nixos-anywhere.md).
OUTPUTS = ("diskoScript", "toplevel")


class Installer:
    """Builds a machine's closures and runs nixos-anywhere on it, as the settings say."""

    def __init__(self, settings: Settings, tuning: Tuning) -> None:
        self.settings = settings
        self.tuning = tuning

    async def build(self, ctx: JobContext, machine: Machine) -> tuple[str, str]:
        """``nix build`` the disko script and the system, bounded like every step."""
        settings = self.settings
        with ctx.failing("refusing to build", ValueError):
            argv = nix.build_argv(
                settings.nix, flake=settings.flake, attr=machine.flake_attr, outputs=OUTPUTS
            )
        ctx.progress.line(f"{INSTALL}: building {machine.flake_attr}")
        try:
            done = await nix.run_nix(
                argv,
                what="nix build",
                env=child_env(),
                on_line=ctx.log.write,
                timeout=self.tuning.build_timeout,
                kill_grace=self.tuning.stop_grace,
            )
        except nix.NixError as exc:
            raise ctx.fail(f"building {machine.flake_attr}: {exc}") from None
        if done.code != 0:
            last = ctx.log.clean(done.last)[:300] or "no output"
            raise ctx.fail(f"nix build of {machine.flake_attr} failed (exit {done.code}): {last}")
        paths = done.store_paths()
        if len(paths) != len(OUTPUTS):
            raise ctx.fail(
                f"nix build of {machine.flake_attr}: expected {len(OUTPUTS)} store paths, "
                f"nix printed {len(paths)}"
            )
        ctx.output(f"built {paths[0]} and {paths[1]}")
        return paths[0], paths[1]

    async def run(
        self,
        ctx: JobContext,
        machine: Machine,
        root: Path,
        disk_key: Secret | None,
        *,
        confirmed_key: str,
        built: tuple[str, str],
    ) -> None:
        """nixos-anywhere with the staged files, the disk key through a pipe, the built
        paths and the confirmed key; its output judged as docs/nixos-anywhere.md says."""
        settings = self.settings
        pinned = await asyncio.to_thread(_write_known_hosts, root, machine, confirmed_key)
        with ctx.failing("refusing to run nixos-anywhere", ValueError):
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
        parser = OutputParser()
        bounds = {**STEP_TIMEOUTS, **self.tuning.step_timeouts}
        step = _Step("start", "starting", time.monotonic())

        def on_line(line: str) -> None:
            logged = ctx.log.write(line)
            if HOST_KEY_CHANGED in logged and _before_kexec(parser.phase):
                raise NixosAnywhereStopped(
                    f"{machine.host}:{machine.ssh_port} answered with another host key than "
                    f"the confirmed {fingerprint(confirmed_key)} (REMOTE HOST IDENTIFICATION "
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
                timeout=self.tuning.nixos_anywhere_timeout,
                redact_also=ctx.log.secrets,
                kill_grace=self.tuning.stop_grace,
                check=check,
                check_interval=min(1.0, self.tuning.progress_interval),
            )
        except NixosAnywhereStopped as exc:
            where = parser.phase.value if parser.phase else "start"
            raise JobFailed(exc.reason, phase=f"{INSTALL} ({where})") from None
        except NixosAnywhereError as exc:
            raise ctx.fail(str(exc)) from None
        outcome = parser.judge(code)
        if not outcome.ok:
            raise JobFailed(outcome.reason, phase=f"{INSTALL} ({outcome.failed_phase or 'start'})")


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
