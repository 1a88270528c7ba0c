"""A simulated NixOS machine: its stages, its sshd, and the knobs tests turn.

Stage transitions run on the lab's supervisor thread (see ``supervisor.py``); the public
methods here hand work to it and return once the host is in a settled state, so a test
that calls ``power_off()`` can rely on the SSH port being closed afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests.lab import generations as gen
from tests.lab import keys
from tests.lab.ask_password import Volume, VolumeAsker
from tests.lab.model import (
    DEFAULT_VOLUMES,
    LUKS_DEVICE,
    PHASES,
    Fault,
    HostPaths,
    HostState,
    Initrd,
    OsKind,
    Stage,
)
from tests.lab.network import AddressLease, PortListener
from tests.lab.proc import kill_pids
from tests.lab.sshd import Sshd, SshdSpec
from tests.lab.supervisor import Supervisor
from tests.lab.units import Activation, SystemManager, Timer

KEY_NAME = "ssh_host_ed25519_key"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class HostContext:
    """What a host needs from its lab."""

    supervisor: Supervisor
    authorized_keys: Path
    control: Path
    cryptsetup: str


@dataclasses.dataclass(frozen=True)
class PassphraseAttempt:
    """One answer the initrd received: when, whether it opened the disk, and how."""

    at: float
    correct: bool
    via: str


class LabHost:
    """One simulated machine on its own loopback address. Create it with ``Lab.start_host``."""

    def __init__(
        self,
        ctx: HostContext,
        host_dir: Path,
        name: str,
        *,
        os: OsKind,
        mem_mib: int,
        luks: bool,
        initrd: Initrd,
        persist_dir: str,
        boot_delay: float,
        down_delay: float,
        askpass_wait: float,
        volumes: Sequence[tuple[str, str]] = DEFAULT_VOLUMES,
        recovery_key: bool = False,
    ) -> None:
        self._ctx = ctx
        self.name = name
        self.paths = HostPaths(host_dir)
        self._lease = AddressLease()
        self.address: str = self._lease.address
        self.ssh_port: int = self._lease.free_port()
        self.initrd_port: int = self._lease.free_port()
        while self.initrd_port == self.ssh_port:
            self.initrd_port = self._lease.free_port()
        #: Seconds between a correct passphrase and the system's sshd coming up.
        self.boot_delay = boot_delay
        #: Seconds a rebooting host stays down before its next stage comes up.
        self.down_delay = down_delay
        #: Seconds between ``reboot`` inside a session and the host going down.
        self.reboot_grace = 0.1
        #: Seconds before nixos-anywhere's ``sleep 6 && reboot`` takes the host down (its
        #: reboot wait's first probe gets in before; set it high for a host that never
        #: goes down).
        self.reboot_script_delay = 0.6
        self._os: OsKind = os
        #: The LUKS passphrase when the lab installed the host itself (``installed=True``).
        self.luks_passphrase: str | None = None
        self.attempts: list[PassphraseAttempt] = []
        #: Human-readable transitions, for diagnosing a failing test.
        self.events: list[str] = []
        self._sshd: Sshd | None = None
        #: systemd initrd: one asker per LUKS volume, for the current boot.
        self._askers: list[VolumeAsker] = []
        self._listeners: dict[int, PortListener] = {}
        self._open_ports: set[int] = set()
        #: Connections that outlived their sshd's listener (``_detach_sshd``).
        self._orphans: list[int] = []
        self._generation = 0
        self._system = SystemManager(self)
        self._state = HostState(
            name=name,
            address=self.address,
            ssh_port=self.ssh_port,
            initrd_port=self.initrd_port,
            control=str(ctx.control),
            cryptsetup=ctx.cryptsetup,
            os=os,
            mem_mib=mem_mib,
            luks=luks,
            initrd=initrd,
            persist_dir=persist_dir,
            askpass_wait=askpass_wait,
            volumes=[[partition, name] for partition, name in volumes],
            recovery_key=recovery_key,
        )
        for folder in (self.paths.root, self.paths.ram, self.paths.sys, self.paths.run):
            folder.mkdir(parents=True, exist_ok=True)
        self.paths.root.chmod(0o755)
        self._publish()

    def __repr__(self) -> str:
        return f"<LabHost {self.name} {self.address} ssh:{self.ssh_port} {self.stage}>"

    # ----------------------------------------------------------------- observed state

    @property
    def stage(self) -> str:
        """``down``, ``installer``, ``initrd`` or ``booted`` (a ``Stage``).

        Typed ``str`` so that checking it again after a transition is not flagged as an
        impossible comparison by mypy's narrowing.
        """
        return self._state.stage

    @property
    def root(self) -> Path:
        """The installed system's filesystem (what ``--extra-files`` lands in)."""
        return self.paths.root

    @property
    def persist(self) -> Path:
        """``root`` joined with the persist dir: where host keys and machine-id live."""
        return self.paths.persist(self._state.persist_dir)

    @property
    def boot_id(self) -> str:
        """The kernel's boot id: new at every boot, shared by initrd and system."""
        return self._state.boot_id

    @property
    def state(self) -> HostState:
        """A copy of what the host publishes to the lab shell."""
        return HostState.from_json(self._state.to_json())

    @property
    def installer_host_key(self) -> str | None:
        """The current installer's public host key (fresh at every installer boot)."""
        return _public_key(self.paths.ram / "etc/ssh" / KEY_NAME)

    @property
    def initrd_host_key(self) -> str | None:
        """The public half of ``/boot/ssh_host_ed25519_key`` on the installed disk."""
        return _public_key(self.paths.root / "boot" / KEY_NAME)

    @property
    def system_host_key(self) -> str | None:
        """The public half of ``<persist_dir>/etc/ssh/ssh_host_ed25519_key``."""
        return _public_key(self.persist / "etc/ssh" / KEY_NAME)

    @property
    def machine_id(self) -> str | None:
        path = self.persist / "etc/machine-id"
        return path.read_text().strip() if path.exists() else None

    @property
    def installed(self) -> bool:
        return self._state.installed_system is not None

    @property
    def pending_passphrase(self) -> bool:
        """Whether the initrd is waiting for a passphrase right now."""
        return self._state.pending_device is not None

    @property
    def console(self) -> list[str]:
        """Lines the host's console showed (systemd-cryptsetup's verdicts), oldest first."""
        path = self.paths.console
        return path.read_text().splitlines() if path.exists() else []

    @property
    def pending_queries(self) -> list[str]:
        """systemd initrd: the messages of the password queries in the host's own
        /run/systemd/ask-password, sorted (what ``--list`` would show)."""
        found = []
        for query in sorted(self.paths.ask_password.glob("ask.*")):
            for line in query.read_text(errors="replace").splitlines():
                if line.startswith("Message="):
                    found.append(line.removeprefix("Message="))
        return sorted(found)

    @property
    def gave_up(self) -> bool:
        """systemd initrd: a volume ran out of tries this boot (only a reboot helps)."""
        return any(asker.gave_up for asker in self._askers)

    @property
    def correct_attempts(self) -> int:
        return sum(1 for a in self.attempts if a.correct)

    @property
    def wrong_attempts(self) -> int:
        return sum(1 for a in self.attempts if not a.correct)

    @property
    def first_unlock_at(self) -> float | None:
        """``time.time()`` of the first correct passphrase the host ever received."""
        return next((a.at for a in self.attempts if a.correct), None)

    @property
    def sshd_pid(self) -> int | None:
        return self._sshd.pid if self._sshd is not None else None

    @property
    def open_ports(self) -> frozenset[int]:
        return frozenset(self._open_ports)

    # ------------------------------------------------------- generations and units

    @property
    def generations(self) -> list[gen.Generation]:
        """The system profile's generations (``system-N-link``), oldest first."""
        return gen.generations(self.paths.root)

    @property
    def current_generation(self) -> int | None:
        """The generation ``/nix/var/nix/profiles/system`` points at."""
        return gen.current_generation(self.paths.root)

    @property
    def current_system(self) -> str | None:
        """``readlink /run/current-system``: the last activated system (None: not booted)."""
        return gen.run_link(self.paths.root, "current-system") if self.stage == "booted" else None

    @property
    def booted_system(self) -> str | None:
        """``readlink /run/booted-system``: the system this boot started."""
        return gen.run_link(self.paths.root, "booted-system") if self.stage == "booted" else None

    @property
    def boot_system(self) -> str | None:
        """The boot loader's default entry: what the next boot starts."""
        return self._state.installed_system

    @property
    def timers(self) -> list[Timer]:
        """Transient timers of this boot: armed (``waiting``) or fired (``elapsed``)."""
        return self._call(self._system.timers)

    @property
    def activations(self) -> list[Activation]:
        """Every ``switch-to-configuration`` run on this host, oldest first."""
        return list(self._system.activations)

    @property
    def units(self) -> dict[str, dict[str, Any]]:
        """Loaded transient units by name, as ``systemctl`` sees them."""
        return self.state.units

    @property
    def sshd_broken(self) -> bool:
        """Whether the active configuration stopped the system sshd."""
        return self._state.sshd_broken

    def known_hosts_line(self, stage: str | None = None) -> str:
        """A known_hosts line pinning the host key of ``stage`` (default: current)."""
        stage = stage or self._state.stage
        key = {
            "installer": self.installer_host_key,
            "initrd": self.initrd_host_key,
            "booted": self.system_host_key,
        }.get(stage)
        if key is None:
            raise ValueError(f"{self.name} has no host key for stage {stage!r}")
        port = self.initrd_port if stage == "initrd" else self.ssh_port
        return f"[{self.address}]:{port} {key}"

    # ------------------------------------------------------------------------ waiting

    async def wait_for_stage(self, stage: Stage, timeout: float = 10.0) -> None:
        """Poll until the host is in ``stage`` (its sshd accepting), or raise TimeoutError."""
        await self.wait_until(lambda: self.stage == stage, timeout, f"stage {stage}")

    def wait_for_stage_sync(self, stage: Stage, timeout: float = 10.0) -> None:
        """``wait_for_stage`` for synchronous code."""
        self.wait_until_sync(lambda: self.stage == stage, timeout, f"stage {stage}")

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {what} within {timeout}s ({self.events})")
            await asyncio.sleep(0.01)

    def wait_until_sync(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {what} within {timeout}s ({self.events})")
            time.sleep(0.01)

    # -------------------------------------------------------------------------- knobs

    def power_off(self) -> None:
        """Cut the power: sshd and every session die now; the host stays down."""
        self._call(self._down)

    def crash(self) -> None:
        """Same as ``power_off``: a crashed host answers nothing until powered on."""
        self._call(self._down)

    def power_on(self) -> None:
        """Boot a host that is down (installer, or initrd/booted once installed)."""
        self._call(lambda: self._boot() if self.stage == "down" else None)

    def reboot(self, down_for: float | None = None) -> None:
        """Go down now, come back after ``down_for`` (default ``down_delay``) seconds."""
        self._call(lambda: self._reboot_now(self._generation, down_for))

    #: A hostile systemd initrd: each new query names the answer it was just given.
    hostile_echo = False
    #: systemd initrd: seconds systemd-cryptsetup takes to check an answer (its KDF).
    verify_seconds = 0.0

    def vanish_initrd(self) -> None:
        """Kill the initrd's sshd and its sessions mid-relay; the host stays stuck there."""

        def vanish() -> None:
            self._stop_sshd()
            self._log("initrd sshd vanished")

        self._call(vanish)

    def set_boot_delay(self, seconds: float) -> None:
        self.boot_delay = seconds

    def set_command_delay(self, seconds: float) -> None:
        """Each request the host answers (an exec, a line to a kept shell) waits this long
        first: the bench's far machines, one round trip per request."""
        self._update(lambda s: setattr(s, "command_delay", seconds))

    def set_askpass_verify(self, seconds: float) -> None:
        """How long the scripted initrd's cryptsetup takes to check an answer (its KDF)."""
        self._update(lambda s: setattr(s, "askpass_verify", seconds))

    def set_askpass_wait(self, seconds: float) -> None:
        """How long ``cryptsetup-askpass`` waits for a request (10 s on real machines)."""
        self._update(lambda s: setattr(s, "askpass_wait", seconds))

    def set_failed_units(self, units: Iterable[str]) -> None:
        """Make the booted system "degraded" with these failed units (empty: running)."""
        self._update(lambda s: setattr(s, "failed_units", list(units)))

    def set_starting_for(self, seconds: float) -> None:
        """After each boot, ``is-system-running`` says "starting" for ``seconds``."""
        self._update(lambda s: setattr(s, "starting_for", seconds))

    def set_system_state(self, state: str | None) -> None:
        """Force ``systemctl is-system-running``'s answer (None: derive from failed units)."""
        self._update(lambda s: setattr(s, "system_state", state))

    def set_disk_usage(self, percent: int) -> None:
        """The Use% that ``df`` reports for the persistent filesystem."""
        self._update(lambda s: setattr(s, "disk_use_percent", percent))

    def set_http(self, url: str, status: int = 200, body: str = "ok\n") -> None:
        """What ``curl URL`` on the booted host answers (unset URLs: connection refused)."""
        self._update(lambda s: s.http.__setitem__(url, [status, body]))

    def clear_http(self, url: str) -> None:
        self._update(lambda s: s.http.pop(url, None))

    def open_port(self, port: int) -> None:
        """Listen on ``address:port`` whenever the host is booted (for ``tcp:`` checks)."""

        def do() -> None:
            self._open_ports.add(port)
            self._sync_listeners()

        self._call(do)

    def close_port(self, port: int) -> None:
        def do() -> None:
            self._open_ports.discard(port)
            self._sync_listeners()

        self._call(do)

    def inject_failure(self, phase: str, exit_code: int = 1, message: str = "") -> None:
        """Make the stand-in ``nixos-anywhere`` fail at ``phase`` (see ``model.PHASES``)."""
        self._add_fault(Fault(phase=phase, exit_code=exit_code, message=message))

    def hang_at(self, phase: str) -> None:
        """Make the stand-in ``nixos-anywhere`` hang at ``phase`` until it is killed."""
        self._add_fault(Fault(phase=phase, hang=True))

    def clear_faults(self) -> None:
        self._update(lambda s: s.faults.clear())

    def cut_connection_after(self, command: str) -> None:
        """The next command that starts with the words ``command`` runs, then the SSH
        connection that ran it drops (its sshd session dies) and the rest of its line
        does not run: a network cut in the middle of a line."""
        self._update(lambda s: s.cut_after.append(command))

    # ------------------------------------------------------------ lab-internal entry

    def start(self, stage: Stage) -> None:
        def do() -> None:
            if stage == "down":
                self._log("created down")
                return
            self._boot(first_stage=stage)

        self._call(do)

    def preinstall(
        self,
        luks_passphrase: str | None,
        system_host_key: Path | None,
        initrd_host_key: Path | None,
        flake_attr: str,
    ) -> None:
        """Install the host as the bot would, without running the stand-in."""
        root, persist = self.paths.root, self.persist
        ssh_dir = persist / "etc/ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        _install_key(system_host_key, ssh_dir / KEY_NAME, f"root@{self.name}")
        (persist / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
        if self._state.luks:
            (root / "boot").mkdir(parents=True, exist_ok=True)
            _install_key(initrd_host_key, root / "boot" / KEY_NAME, f"initrd@{self.name}")
            passphrase = luks_passphrase or secrets.token_urlsafe(12)
            for index in range(max(len(self._state.volumes), 1)):
                keys.luks_format(
                    self._ctx.cryptsetup, self.paths.volume_image(index), passphrase.encode()
                )
            self.luks_passphrase = passphrase
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc/NIXOS").write_text("")
        system = gen.closure(flake_attr, gen.LabConfig())
        gen.install(root, system)
        self._state.formatted = True
        self._state.installed_system = system.toplevel
        self._publish()

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """A request from the lab shell running on this host (see ``control.py``)."""
        return self._call(lambda: self._on_request(message))

    def close(self) -> None:
        def do() -> None:
            self._generation += 1
            self._stop_askers()
            self._stop_sshd()
            self._system.on_down()
            self._open_ports.clear()
            self._sync_listeners()

        askers = list(self._askers)
        try:
            self._call(do)
        except Exception:
            self._stop_askers()
            self._stop_sshd()
            self._system.on_down()
            for listener in self._listeners.values():
                listener.close()
            raise
        finally:
            for asker in askers:
                asker.join(5.0)
            self._lease.release()

    # ------------------------------------------------- transitions (supervisor thread)

    def _call(self, fn: Callable[[], T]) -> T:
        return self._ctx.supervisor.call(fn)

    def _update(self, change: Callable[[HostState], object]) -> None:
        def do() -> None:
            change(self._state)
            self._publish()

        self._call(do)

    def _add_fault(self, fault: Fault) -> None:
        if fault.phase not in PHASES:
            raise ValueError(f"unknown phase {fault.phase!r}; phases are {PHASES}")
        self._update(lambda s: s.faults.append(fault))

    def _publish(self) -> None:
        self.paths.write_state(self._state)

    def _log(self, event: str) -> None:
        self.events.append(f"{time.monotonic():.3f} {event}")

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        generation = self._generation

        def guarded() -> None:
            if self._generation == generation:
                fn()

        self._ctx.supervisor.later(delay, guarded)

    def _on_request(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        state = self._state
        if op == "attempt":
            correct = bool(message["correct"])
            self.attempts.append(PassphraseAttempt(time.time(), correct, str(message["via"])))
            self._log(f"passphrase {'right' if correct else 'wrong'} via {message['via']}")
            if correct and state.stage == "initrd" and state.pending_device is not None:
                state.pending_device = None
                self._publish()
                self._later(self.boot_delay, self._unlocked)
        elif op == "reboot":
            generation = self._generation
            grace = (
                self.reboot_script_delay if message.get("after") == "script" else self.reboot_grace
            )
            self._later(grace, lambda: self._reboot_now(generation, None))
        elif op == "poweroff":
            self._later(self.reboot_grace, self._down)
        elif op == "kexec":
            self._later(self.reboot_grace, self._kexec)
        elif op == "remount":
            state.rw_store_size = str(message["size"])
            self._publish()
        elif op == "formatted":
            state.formatted = True
            state.installed_system = None
            self._publish()
        elif op == "cut":
            command = str(message["command"])
            if command not in state.cut_after:
                return {"ok": True, "cut": False}
            state.cut_after.remove(command)
            self._publish()
            self._log(f"connection cut after {command}")
            return {"ok": True, "cut": True}
        elif op == "installed":
            state.installed_system = str(message["system"])
            self._publish()
            self._log(f"installed {state.installed_system}")
        else:
            answer = self._system.handle(message)
            return answer or {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True}

    def _down(self) -> None:
        self._generation += 1
        self._stop_askers()
        self._stop_sshd()
        self._system.on_down()
        self._state.stage = "down"
        self._state.pending_device = None
        self._sync_listeners()
        self._publish()
        self._log("down")

    def _reboot_now(self, generation: int, down_for: float | None) -> None:
        if generation != self._generation:
            return
        self._down()
        self._later(self.down_delay if down_for is None else down_for, self._boot)

    def _kexec(self) -> None:
        self._down()

        def into_installer() -> None:
            self._state.kexec = True
            self._boot(first_stage="installer")

        self._later(self.down_delay, into_installer)

    def _boot(self, first_stage: Stage | None = None) -> None:
        state = self._state
        state.boot_id = str(uuid.uuid4())
        state.booted_at = time.time()
        if first_stage != "installer":
            state.kexec = False
        for volatile in (self.paths.ram, self.paths.initrd, self.paths.sys):
            shutil.rmtree(volatile, ignore_errors=True)
            volatile.mkdir(parents=True)
        _write(self.paths.sys / "proc/sys/kernel/random/boot_id", state.boot_id + "\n")
        _write(self.paths.sys / "proc/meminfo", _meminfo(state.mem_mib))
        target = first_stage
        if target is None:
            if state.installed_system is None:
                target = "installer"
            else:
                target = "initrd" if state.luks else "booted"
        if target == "installer":
            self._enter_installer()
        elif target == "initrd":
            self._enter_initrd()
        else:
            self._enter_booted()

    def _enter_installer(self) -> None:
        state = self._state
        state.os = "nixos-installer" if state.kexec else self._os
        state.rw_store_size = f"{max(state.mem_mib // 4, 64)}M"
        key = self.paths.ram / "etc/ssh" / KEY_NAME
        keys.generate_ed25519(key, f"root@{self.name}-installer")
        (self.paths.ram / "tmp").mkdir(parents=True, exist_ok=True)
        (self.paths.ram / "root").mkdir(parents=True, exist_ok=True)
        if state.kexec:
            _write(self.paths.ram / "etc/is_kexec", "")
        _write(self.paths.sys / "etc/os-release", _os_release(state.os, installer=True))
        self._start_sshd("installer", self.ssh_port, key)

    def _enter_initrd(self) -> None:
        state = self._state
        _write(self.paths.sys / "etc/os-release", _os_release("nixos", installer=False))
        installed_key = self.paths.root / "boot" / KEY_NAME
        state.pending_device = LUKS_DEVICE
        if state.initrd == "systemd":
            self._start_askers()
        if not installed_key.exists():
            self._set_stage("initrd")
            self._log("initrd has no host key at /boot: no SSH")
            return
        key_copy = self.paths.run / "initrd_host_key"
        shutil.copyfile(installed_key, key_copy)
        key_copy.chmod(0o600)
        self._start_sshd("initrd", self.initrd_port, key_copy)

    def _enter_booted(self) -> None:
        state = self._state
        state.pending_device = None
        _write(self.paths.sys / "etc/os-release", _os_release("nixos", installer=False))
        persist = self.persist
        key = persist / "etc/ssh" / KEY_NAME
        if not key.exists():
            keys.generate_ed25519(key, f"root@{self.name}")
            self._log("system host key missing: generated a new one")
        machine_id = persist / "etc/machine-id"
        if not machine_id.exists():
            _write(machine_id, secrets.token_hex(16) + "\n")
        if self._system.on_boot():
            self._start_sshd("booted", self.ssh_port, key)
        else:
            self._set_stage("booted")
            self._log("the booted system stops sshd: no SSH")

    def _start_system_sshd(self) -> None:
        """Start the booted system's sshd again (a good configuration was activated)."""
        if self.stage == "booted" and self._sshd is None:
            self._start_sshd("booted", self.ssh_port, self.persist / "etc/ssh" / KEY_NAME)

    # ------------------------------------------- systemd initrd (supervisor thread)

    def _start_askers(self) -> None:
        """systemd-cryptsetup for every volume: real queries in the host's own folder."""
        folder = self.paths.ask_password
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o755)
        generation = self._generation
        self._askers = []
        for index, (partition, name) in enumerate(self._state.volumes):
            volume = Volume(
                partition=partition,
                name=name,
                image=self.paths.volume_image(index),
                recovery_key=self._state.recovery_key,
            )
            asker = VolumeAsker(
                volume,
                folder=folder,
                cryptsetup=self._ctx.cryptsetup,
                on_event=functools.partial(self._from_asker, generation),
                console=self._console,
                echo_answers=self.hostile_echo,
                verify_seconds=self.verify_seconds,
                proc=self.paths.sys / "proc",
            )
            self._askers.append(asker)
            asker.start()

    def _stop_askers(self) -> None:
        for asker in self._askers:
            asker.stop()

    def _from_asker(self, generation: int, volume: Volume, event: str) -> None:
        """An asker's verdict (on its own thread): handed to the supervisor thread."""
        try:
            self._call(lambda: self._volume_event(generation, volume, event))
        except BaseException:  # the lab closed meanwhile: nothing left to tell
            return

    def _volume_event(self, generation: int, volume: Volume, event: str) -> None:
        if generation != self._generation:
            return
        state = self._state
        if event in ("right", "wrong"):
            correct = event == "right"
            self.attempts.append(PassphraseAttempt(time.time(), correct, "systemd"))
            self._log(f"passphrase {event} for {volume.name} via systemd")
        else:
            self._log(f"{volume.name}: too many attempts, gave up")
        if any(asker.waiting for asker in self._askers):
            return
        state.pending_device = None
        self._publish()
        if all(asker.opened for asker in self._askers):
            self._later(self.boot_delay, self._unlocked)

    def _console(self, line: str) -> None:
        with self.paths.console.open("a") as console:
            console.write(line + "\n")

    def _unlocked(self) -> None:
        if self.stage != "initrd":
            return
        self._stop_sshd()
        self._enter_booted()

    def _start_sshd(self, stage: Stage, port: int, host_key: Path) -> None:
        if self._sshd is not None:
            self._sshd.stop()
            self._sshd = None
        spec = SshdSpec(
            address=self.address,
            port=port,
            host_key=host_key,
            authorized_keys=self._ctx.authorized_keys,
            host_dir=self.paths.dir,
            stage=stage,
            run_dir=self.paths.run,
        )
        sshd = Sshd(spec)
        try:
            sshd.start()
        except RuntimeError as exc:
            self._log(f"{stage}: sshd failed: {exc}")
        else:
            self._sshd = sshd
        self._set_stage(stage)

    def _set_stage(self, stage: Stage) -> None:
        self._state.stage = stage
        self._publish()
        self._sync_listeners()
        self._log(f"{stage} (boot {self._state.boot_id[:8]})")

    def _stop_sshd(self) -> None:
        if self._sshd is not None:
            self._sshd.stop()
            self._sshd = None
        if self._orphans:
            kill_pids(self._orphans)
            self._orphans = []

    def _detach_sshd(self) -> None:
        """Stop the listener (new connections refused); open connections live on."""
        if self._sshd is not None:
            self._orphans += self._sshd.stop_listener()
            self._sshd = None

    def _sync_listeners(self) -> None:
        wanted = self._open_ports if self.stage == "booted" else set()
        for port in set(self._listeners) - wanted:
            self._listeners.pop(port).close()
        for port in wanted - set(self._listeners):
            self._listeners[port] = PortListener(self.address, port)


def _public_key(private_key: Path) -> str | None:
    if not private_key.exists():
        return None
    try:
        return keys.public_key_of(private_key)
    except Exception:
        return None


def _install_key(source: Path | None, dest: Path, comment: str) -> None:
    if source is None:
        keys.generate_ed25519(dest, comment)
        return
    shutil.copyfile(source, dest)
    dest.chmod(0o600)
    dest.with_name(dest.name + ".pub").write_text(keys.public_key_of(dest) + "\n")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _meminfo(mem_mib: int) -> str:
    total = mem_mib * 1024
    return (
        f"MemTotal:       {total:>8} kB\n"
        f"MemFree:        {total * 3 // 4:>8} kB\n"
        f"MemAvailable:   {total * 4 // 5:>8} kB\n"
        f"Buffers:        {2048:>8} kB\n"
        f"Cached:         {total // 10:>8} kB\n"
        f"SwapTotal:      {0:>8} kB\n"
        f"SwapFree:       {0:>8} kB\n"
    )


def _os_release(os: str, *, installer: bool) -> str:
    if os == "debian":
        return (
            'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
            'NAME="Debian GNU/Linux"\n'
            'VERSION_ID="12"\n'
            'VERSION="12 (bookworm)"\n'
            "VERSION_CODENAME=bookworm\n"
            "ID=debian\n"
            'HOME_URL="https://www.debian.org/"\n'
        )
    lines = [
        'ANSI_COLOR="1;34"',
        'BUILD_ID="25.05.20250612.9e83b64"',
        'HOME_URL="https://nixos.org/"',
        "ID=nixos",
        'LOGO="nix-snowflake"',
        "NAME=NixOS",
        'PRETTY_NAME="NixOS 25.05 (Warbler)"',
        'VERSION="25.05 (Warbler)"',
        "VERSION_CODENAME=warbler",
        'VERSION_ID="25.05"',
    ]
    if installer:
        lines += ['VARIANT="Installer"', "VARIANT_ID=installer"]
    return "\n".join(sorted(lines)) + "\n"
