"""The lab: a temporary folder of simulated hosts, one operator key, one control socket.

Use it as a context manager (or through the ``lab`` fixture): closing it kills every
sshd and session it started, releases the hosts' addresses and removes its folder.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.lab import keys
from tests.lab.control import ControlServer
from tests.lab.generations import LabConfig
from tests.lab.host import HostContext, LabHost
from tests.lab.model import DEFAULT_VOLUMES, PHASES, Initrd, OsKind, Stage
from tests.lab.proc import kill_stragglers
from tests.lab.supervisor import Supervisor

NIXOS_ANYWHERE = Path(__file__).resolve().with_name("nixos_anywhere.py")
NIX = Path(__file__).resolve().with_name("nix.py")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_open_labs: set[Lab] = set()


class Lab:
    """Simulated NixOS targets behind real OpenSSH, plus the stand-in nixos-anywhere."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="deploybot-lab-", dir="/tmp"))
        self.hosts: dict[str, LabHost] = {}
        self._closed = False
        try:
            #: The operator's private key: DEPLOYBOT_SSH_KEY, and ``-i`` for the stand-in.
            self.operator_key = self.dir / "operator" / "id_ed25519"
            #: Its public line, accepted by every stage of every host.
            self.operator_public_key = keys.generate_ed25519(self.operator_key, "operator@lab")
            self.authorized_keys = self.dir / "authorized_keys"
            self.authorized_keys.write_text(self.operator_public_key + "\n")
            self.cryptsetup = keys.cryptsetup_path()
            self._supervisor = Supervisor()
            self._control = ControlServer(self.dir / "control.sock", self._on_request)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self._ctx = HostContext(
            supervisor=self._supervisor,
            authorized_keys=self.authorized_keys,
            control=self._control.path,
            cryptsetup=self.cryptsetup,
        )
        _open_labs.add(self)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------ hosts

    def start_host(
        self,
        name: str | None = None,
        *,
        stage: Stage = "installer",
        os: OsKind = "nixos-installer",
        mem_mib: int = 2048,
        luks: bool = True,
        initrd: Initrd = "askpass",
        persist_dir: str = "/nix/persist/system",
        boot_delay: float = 0.3,
        down_delay: float = 0.2,
        askpass_wait: float = 2.0,
        installed: bool | None = None,
        luks_passphrase: str | None = None,
        system_host_key: Path | None = None,
        initrd_host_key: Path | None = None,
        flake_attr: str | None = None,
        volumes: Sequence[tuple[str, str]] | None = None,
        recovery_key: bool = False,
    ) -> LabHost:
        """Start a simulated host and return once its stage's sshd accepts connections.

        ``stage="initrd"``/``"booted"`` (or ``installed=True``) make the lab install the
        host itself, without the stand-in: a system host key (``system_host_key`` copied,
        or generated), an initrd host key at /boot, a machine-id, and a LUKS2 header
        opened by ``luks_passphrase`` (generated when not given; see ``host.luks_passphrase``).
        ``stage="down"`` creates it powered off (``power_on()`` boots it).
        """
        name = name or f"host{len(self.hosts) + 1}"
        if not _NAME.match(name) or name in self.hosts:
            raise ValueError(f"bad or duplicate host name {name!r}")
        if stage == "initrd" and not luks:
            raise ValueError("a host without LUKS has no initrd stage")
        if installed is None:
            installed = stage in ("initrd", "booted")
        if installed and stage == "installer":
            raise ValueError("an installed host boots into initrd or booted, not installer")
        host_dir = self.dir / "hosts" / name
        host = LabHost(
            self._ctx,
            host_dir,
            name,
            os=os,
            mem_mib=mem_mib,
            luks=luks,
            initrd=initrd,
            persist_dir=persist_dir,
            boot_delay=boot_delay,
            down_delay=down_delay,
            askpass_wait=askpass_wait,
            volumes=tuple(volumes) if volumes else DEFAULT_VOLUMES,
            recovery_key=recovery_key,
        )
        self.hosts[name] = host
        if installed:
            host.preinstall(luks_passphrase, system_host_key, initrd_host_key, flake_attr or name)
        host.start(stage)
        return host

    def start_installed_host(
        self, name: str | None = None, *, stage: Stage = "initrd", **options: Any
    ) -> LabHost:
        """A host the bot installed earlier, waiting in its initrd (or ``stage``)."""
        if stage == "initrd" and not options.get("luks", True):
            stage = "booted"
        return self.start_host(name, stage=stage, installed=True, **options)

    # --------------------------------------------------------------- the stand-in

    def nixos_anywhere_command(
        self,
        *,
        fail: str | None = None,
        exit_code: int = 1,
        hang: str | None = None,
        interval: float = 0.05,
        give_up_after: int | None = None,
        build_delay: float = 0.0,
        hold: bool = False,
    ) -> list[str]:
        """The stand-in's command prefix; the bot appends the real flags to it.

        ``fail``/``hang`` name a phase (``model.PHASES``) for every host this prefix
        installs; per-host faults are ``host.inject_failure`` / ``host.hang_at``.
        ``interval`` replaces the real waits between retries (3 s, 1 s, 5 s).
        ``give_up_after`` makes an unreachable host fail after that many tries (the real
        one retries for ever). ``build_delay`` is how long its local builds take (skipped
        with ``--store-paths``); ``hold`` makes every run wait before its first ssh until
        ``release_stand_ins()``.
        """
        argv = [sys.executable, str(NIXOS_ANYWHERE), "--lab-dir", str(self.dir)]
        argv += ["--lab-interval", str(interval)]
        for phase in (fail, hang):
            if phase is not None and phase not in PHASES:
                raise ValueError(f"unknown phase {phase!r}; phases are {PHASES}")
        if fail is not None:
            argv += ["--lab-fail", f"{fail}:{exit_code}"]
        if hang is not None:
            argv += ["--lab-hang", hang]
        if give_up_after is not None:
            argv += ["--lab-give-up-after", str(give_up_after)]
        if build_delay:
            argv += ["--lab-build-delay", str(build_delay)]
        if hold:
            argv.append("--lab-hold-before-ssh")
        return argv

    def stand_ins(self) -> list[dict[str, Any]]:
        """Every run of the stand-in so far: ``{"pid", "tmp", "key_copy", "builds"}`` (the
        outputs it built itself), oldest first."""
        folder = self.dir / "stand-ins"
        runs = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
        return sorted(
            runs, key=lambda run: (self.dir / "stand-ins" / f"{run['pid']}.json").stat().st_mtime
        )

    def stand_in_waiting(self) -> bool:
        """Whether a ``hold`` run has reached its first ssh and waits to be released."""
        folder = self.dir / "stand-ins"
        return folder.is_dir() and any(folder.glob("*.waiting"))

    def release_stand_ins(self) -> None:
        folder = self.dir / "stand-ins"
        folder.mkdir(exist_ok=True)
        (folder / "release").write_text("")

    def nixos_anywhere_prefix(self, **options: Any) -> str:
        """``nixos_anywhere_command`` as one string, for DEPLOYBOT_NIXOS_ANYWHERE."""
        return shlex.join(self.nixos_anywhere_command(**options))

    def nix_command(self, *, build_delay: float = 0.0) -> list[str]:
        """The stand-in ``nix`` (DEPLOYBOT_NIX): ``build`` and ``copy``; append real args.
        ``build_delay``: every build takes that many seconds more (a real evaluation)."""
        argv = [sys.executable, str(NIX), "--lab-dir", str(self.dir)]
        return argv + (["--lab-build-delay", str(build_delay)] if build_delay else [])

    def nix_prefix(self, *, build_delay: float = 0.0) -> str:
        """``nix_command`` as one string, for DEPLOYBOT_NIX."""
        return shlex.join(self.nix_command(build_delay=build_delay))

    def make_flake(
        self,
        attrs: Iterable[str] | Mapping[str, LabConfig] = ("clawsiecats-luks",),
        name: str = "flake",
    ) -> Path:
        """A folder to pass as DEPLOYBOT_FLAKE: the stand-ins know these attributes.

        A mapping says how each attribute behaves (``LabConfig``); plain names behave
        as ``LabConfig()``, the configuration a preinstalled host runs.
        """
        flake = self.dir / name
        flake.mkdir(parents=True, exist_ok=True)
        chosen = attrs if isinstance(attrs, Mapping) else {a: LabConfig() for a in attrs}
        configs = {
            attr: {"system": "x86_64-linux", **dataclasses.asdict(config)}
            for attr, config in chosen.items()
        }
        (flake / "flake.nix").write_text(
            "{\n  # deploybot lab flake: the stand-in nixos-anywhere reads lab-flake.json\n"
            "  outputs = { self, ... }: { };\n}\n"
        )
        (flake / "lab-flake.json").write_text(json.dumps({"nixosConfigurations": configs}))
        return flake

    def set_configuration(
        self, flake: Path, attr: str, config: LabConfig | None = None, **changes: Any
    ) -> LabConfig:
        """Change (or add) one attribute of a lab flake: ``config``, or the current one
        with ``changes`` (``version="2"``, ``kernel="6.12.34"``, ``breaks_ssh=True``...)."""
        path = flake / "lab-flake.json"
        raw = json.loads(path.read_text())
        configs: dict[str, Any] = raw["nixosConfigurations"]
        base = config or LabConfig.from_json(configs.get(attr, {}))
        chosen = dataclasses.replace(base, **changes)
        configs[attr] = {"system": "x86_64-linux", **dataclasses.asdict(chosen)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw))
        tmp.replace(path)
        return chosen

    # ------------------------------------------------------------------ plain ssh

    def ssh_argv(
        self,
        host: LabHost,
        *,
        initrd: bool = False,
        known_hosts: Path | None = None,
        options: Sequence[str] = (),
    ) -> list[str]:
        """``ssh`` arguments up to and including ``root@address`` (append a command).

        Without ``known_hosts`` the host key is not checked (like nixos-anywhere).
        """
        argv = ["ssh", "-F", "none", "-i", str(self.operator_key), "-o", "IdentitiesOnly=yes"]
        argv += ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"]
        if known_hosts is None:
            argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"]
        else:
            argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        for option in options:
            argv += ["-o", option]
        argv += ["-p", str(host.initrd_port if initrd else host.ssh_port), f"root@{host.address}"]
        return argv

    # ---------------------------------------------------------------- internals

    def _on_request(self, message: dict[str, Any]) -> dict[str, Any]:
        host = self.hosts.get(str(message.get("host")))
        if host is None:
            return {"ok": False, "error": f"no host {message.get('host')!r}"}
        return host.handle(message)

    def close(self) -> None:
        """Kill every process of every host, release addresses, remove the folder."""
        if self._closed:
            return
        self._closed = True
        _open_labs.discard(self)
        errors: list[BaseException] = []
        for host in self.hosts.values():
            try:
                host.close()
            except Exception as exc:
                errors.append(exc)
        self._control.close()
        self._supervisor.close()
        kill_stragglers(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise errors[0]


@atexit.register
def _close_forgotten_labs() -> None:
    for lab in list(_open_labs):
        lab.close()
