"""One real OpenSSH server for one stage of one simulated host.

Every command that reaches it runs the lab shell through ``ForceCommand``, so nothing
ever runs on the real machine. ``SetEnv SHLVL=1`` keeps root's bash from sourcing
``~/.bashrc`` for each command (bash does that for sshd's children at level 1).
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
from pathlib import Path

from tests.lab.proc import descendants, kill_tree, wait_for_port

SSHD = "/usr/sbin/sshd"
SHELL_SCRIPT = Path(__file__).resolve().with_name("shell.py")


@dataclasses.dataclass(frozen=True)
class SshdSpec:
    address: str
    port: int
    host_key: Path
    authorized_keys: Path
    host_dir: Path
    stage: str
    run_dir: Path

    @property
    def config_path(self) -> Path:
        return self.run_dir / f"sshd-{self.stage}.conf"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"sshd-{self.stage}.log"

    def config(self) -> str:
        shell = [sys.executable, "-S", str(SHELL_SCRIPT), str(self.host_dir), self.stage]
        force = shlex.join(shell)
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.address}",
            f"HostKey {self.host_key}",
            "PidFile none",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
            "DisableForwarding yes",
            "MaxStartups 64:30:128",
            "LoginGraceTime 30",
            "SetEnv SHLVL=1",
            "Subsystem sftp internal-sftp",
            f"ForceCommand {force}",
            "LogLevel VERBOSE",
        ]
        return "\n".join(lines) + "\n"


class Sshd:
    """A running sshd in the foreground (``-D -e``) that the lab owns and kills."""

    def __init__(self, spec: SshdSpec) -> None:
        self.spec = spec
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.spec.run_dir.mkdir(parents=True, exist_ok=True)
        self.spec.config_path.write_text(self.spec.config())
        with self.spec.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.spec.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_for_port(self.spec.address, self.spec.port, timeout, self._proc)
        except Exception as exc:
            self.stop()
            log_tail = self.spec.log_path.read_text()[-2000:]
            raise RuntimeError(f"sshd did not start: {exc}\n{log_tail}") from exc

    def stop_listener(self) -> list[int]:
        """Kill the listener only, as ``systemctl stop sshd`` with NixOS's
        ``KillMode=process``: open connections live on. Returns their pids, which the
        caller now owns (``kill_pids``)."""
        if self._proc is None:
            return []
        sessions = descendants(self._proc.pid)
        self._proc.kill()
        self._proc.wait()
        self._proc = None
        return sessions

    def stop(self) -> None:
        """Kill the listener and every session below it (connections drop at once)."""
        if self._proc is not None:
            kill_tree(self._proc)
            self._proc = None
