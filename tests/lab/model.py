"""The state a simulated host publishes, and the layout of its folder.

The lab (in the test process) is the only writer of ``host.json``; the lab shell
(run by sshd's ForceCommand) and the stand-in ``nixos-anywhere`` only read it.
Standard library only: the lab shell imports this module on every SSH command.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal

Stage = Literal["down", "installer", "initrd", "booted"]
STAGES: tuple[Stage, ...] = ("down", "installer", "initrd", "booted")
OsKind = Literal["nixos-installer", "debian"]
Initrd = Literal["askpass", "systemd"]

#: Fault points of the stand-in ``nixos-anywhere``, in the order it reaches them.
PHASES: tuple[str, ...] = ("ssh-keys", "facts", "kexec", "disko", "install", "reboot")

LUKS_DEVICE = "/dev/disk/by-partlabel/disk-main-luks"
#: The LUKS volumes of a systemd initrd: (partition label, mapper name), as in crypttab.
DEFAULT_VOLUMES: tuple[tuple[str, str], ...] = (("disk-main-luks", "crypted"),)
NIXOS_VERSION = "25.05.20250612.9e83b64 (Warbler)"


@dataclasses.dataclass
class Fault:
    """What the stand-in does when it reaches a phase: fail with a code, or hang."""

    phase: str
    exit_code: int = 1
    message: str = ""
    hang: bool = False


@dataclasses.dataclass
class HostState:
    """Everything the lab shell needs to answer a command, as published by the lab."""

    name: str
    address: str
    ssh_port: int
    initrd_port: int
    control: str
    cryptsetup: str
    stage: Stage = "down"
    boot_id: str = ""
    booted_at: float = 0.0
    os: OsKind = "nixos-installer"
    kexec: bool = False
    mem_mib: int = 2048
    rw_store_size: str = "1024M"
    luks: bool = True
    initrd: Initrd = "askpass"
    persist_dir: str = "/nix/persist/system"
    pending_device: str | None = None
    askpass_wait: float = 2.0
    #: Scripted initrd: seconds cryptsetup takes to check an answer (its KDF), shown in /proc.
    askpass_verify: float = 0.0
    #: Seconds each request to the host waits (an exec, a line to a kept shell): a far
    #: machine's round trip; the simple commands of one line run without it.
    command_delay: float = 0.0
    #: systemd initrd: the LUKS volumes asked for, [partition, mapper name] each.
    volumes: list[list[str]] = dataclasses.field(
        default_factory=lambda: [list(v) for v in DEFAULT_VOLUMES]
    )
    #: systemd initrd: ask for a recovery key instead of a passphrase.
    recovery_key: bool = False
    formatted: bool = False
    installed_system: str | None = None
    failed_units: list[str] = dataclasses.field(default_factory=list)
    system_state: str | None = None
    #: Seconds after each boot that ``is-system-running`` says "starting": on a real
    #: system SSH answers before every unit has started.
    starting_for: float = 0.0
    http: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    disk_use_percent: int = 23
    faults: list[Fault] = dataclasses.field(default_factory=list)
    #: Transient units of this boot by name (``units.py``): services and timers.
    units: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: How finished transient services ended, by invocation id (``systemd-run --wait``).
    finished: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: The active configuration stopped the system sshd (``LabConfig.breaks_ssh``).
    sshd_broken: bool = False
    #: Commands (their first words) after which the SSH connection that ran them drops,
    #: once each (``LabHost.cut_connection_after``).
    cut_after: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HostState:
        raw: dict[str, Any] = json.loads(text)
        raw["faults"] = [Fault(**f) for f in raw.get("faults", [])]
        return cls(**raw)


class HostPaths:
    """Where each part of a simulated host lives inside its folder."""

    def __init__(self, host_dir: Path) -> None:
        self.dir = host_dir
        self.state = host_dir / "host.json"
        #: The installed system's filesystem (``/mnt`` while installing).
        self.root = host_dir / "root"
        #: The installer's RAM: wiped at every boot.
        self.ram = host_dir / "ram"
        #: Kernel-provided files: /proc/meminfo, boot_id, /etc/os-release.
        self.sys = host_dir / "sys"
        #: The initrd's own (empty) root.
        self.initrd = host_dir / "initrd"
        #: sshd configs, logs and key copies: never seen by the simulated host.
        self.run = host_dir / "run"
        #: The LUKS2 "disk": a small file holding a real LUKS2 header.
        self.luks_image = host_dir / "luks.img"
        #: The host's own /run/systemd/ask-password (bind-mounted in its namespaces).
        self.ask_password = host_dir / "ask-password"
        #: What the host's console shows (systemd-cryptsetup's verdicts).
        self.console = host_dir / "console.log"

    def volume_image(self, index: int) -> Path:
        """The LUKS2 header of the ``index``-th volume (the first is ``luks_image``)."""
        return self.luks_image if index == 0 else self.dir / f"luks-{index}.img"

    def persist(self, persist_dir: str) -> Path:
        """The folder that a booted system mounts its persistent files from."""
        return self.root / persist_dir.strip("/") if persist_dir.strip("/") else self.root

    def read_state(self) -> HostState:
        return HostState.from_json(self.state.read_text())

    def write_state(self, state: HostState) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, self.state)


def find_host_dir(lab_dir: Path, address: str) -> Path | None:
    """The folder of the lab host listening on ``address``, if there is one."""
    for state_file in sorted((lab_dir / "hosts").glob("*/host.json")):
        try:
            raw = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if raw.get("address") == address:
            return state_file.parent
    return None
