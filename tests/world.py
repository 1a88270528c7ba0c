"""A whole setting for end-to-end tests: lab hosts, their sops secrets, and the bot.

``World`` knows one machine per lab host and writes the inventory the operator would write
for it; tests then talk to the bot as operators do and look at the hosts as the lab sees
them.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.keys import public_from_private
from bot.remote.place import same_key
from tests.botrig import BotRig
from tests.fake_telegram import ChatRef, FakeMessage, FakeUser
from tests.lab.host import LabHost
from tests.lab.lab import Lab
from tests.lab.sops import SopsSecrets, make_sops_secrets
from tests.people import ADMIN, OPERATOR

FINISHED = re.compile(r"^(Deploy|Reinstall) .* — (succeeded|failed|cancelled|interrupted) after")
HOST_KEY_SECRET = "clawsiecats_ssh_host_ed25519_key"
LUKS_SECRET = "clawsiecats_luks_passphrase"
AUTO_PASSPHRASE = "correct horse battery staple"


def make_host_key(directory: Path) -> str:
    """A fresh OpenSSH ed25519 private key, as an operator keeps it in sops."""
    path = directory / "host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@clawsiecats", "-f", str(path)],
        check=True,
    )
    text = path.read_text()
    path.unlink()
    path.with_suffix(".pub").unlink()
    return text


@dataclass
class World:
    lab: Lab
    rig: BotRig
    root: Path
    flake: Path
    sops: SopsSecrets
    host_private_key: str
    machines: dict[str, str] = field(default_factory=dict)

    @property
    def op(self) -> FakeUser:
        return self.rig.tg.user(OPERATOR, "opal")

    @property
    def admin(self) -> FakeUser:
        return self.rig.tg.user(ADMIN, "ada")

    def machine(self, name: str, host: LabHost, /, **keys: Any) -> None:
        """Add ``[machines.name]`` for ``host``; ``keys`` override the defaults below.

        The sops-held host key is named only when it can be the host's: a host still to
        be installed, or one installed with that key. Naming another would contradict the
        key the host presents, and the bot would trust neither.
        """
        ours = public_from_private(self.host_private_key, comment="")
        installed_with_another = host.installed and not same_key(host.system_host_key or "", ours)
        entry: dict[str, Any] = {
            "host": host.address,
            "ssh_port": host.ssh_port,
            "initrd_port": host.initrd_port,
            "flake_attr": "clawsiecats-luks",
            "luks": True,
            "secrets_file": str(self.sops.path),
            "host_key_secret": HOST_KEY_SECRET,
            "operators": [OPERATOR],
            "boot_timeout": "20s",
            "unlock_timeout": "20s",
            "probe_interval": "1h",
        }
        if installed_with_another:
            del entry["host_key_secret"]
        entry.update(keys)
        lines = [f"[machines.{name}]"]
        for key, value in entry.items():
            lines.append(f"{key} = {_toml(value)}")
        self.machines[name] = "\n".join(lines) + "\n"

    def stand_ins(self, *, living: bool = False) -> list[int]:
        """Processes of this lab's stand-in nixos-anywhere; ``living`` leaves zombies out."""
        found = []
        needle = str(self.lab.dir).encode()
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes()
                if b"nixos_anywhere.py" not in argv or needle not in argv:
                    continue
                state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
                if not (living and state == "Z"):
                    found.append(int(proc.name))
        return found

    def inventory(self) -> str:
        return "\n".join(self.machines.values())

    async def start(self, **tuning: Any) -> BotRig:
        return await self.rig.start(self.inventory(), **tuning)

    async def pin(self, name: str, host: LabHost, *, initrd: bool = True) -> None:
        """Pin ``host``'s keys as a deploy would have (``initrd=False``: the system key only)."""
        keys = {"host_key": host.system_host_key or ""}
        if initrd:
            keys["initrd_host_key"] = host.initrd_host_key or ""
        await self.rig.svc.store.update_machine(name, **keys)

    async def confirm_deploy(
        self, user: FakeUser, machine: str, *, command: str = "/deploy"
    ) -> FakeMessage:
        """Send ``/deploy machine`` and press the confirmation button."""
        tg = self.rig.tg
        await tg.send_text(user, f"{command} {machine}")
        confirmation = await tg.wait_for_message(user, lambda m: bool(m.buttons), timeout=20)
        await tg.press_button(user, confirmation, "Erase and install")
        return confirmation

    async def answer_secret(self, user: FakeUser, prompt_contains: str, secret: str) -> FakeMessage:
        """Wait for a passphrase prompt and answer it; returns the user's (deleted) message."""
        tg = self.rig.tg
        await tg.wait_for_message(user, lambda m: prompt_contains in m.body, timeout=30)
        return await tg.send_text(user, secret)

    async def job_end(self, chat: ChatRef, *, timeout: float = 60) -> FakeMessage:
        """The job's progress message once it shows a final result."""
        return await self.rig.tg.wait_for_message(
            chat,
            lambda m: bool(FINISHED.search(m.body.split("\n")[0])),
            edits=True,
            since=0,
            timeout=timeout,
        )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_world(
    lab: Lab,
    rig: BotRig,
    root: Path,
    *,
    nixos_anywhere: dict[str, Any] | None = None,
    nix_build_delay: float = 0.0,
) -> World:
    secrets_dir = root / "secrets"
    secrets_dir.mkdir()
    private = make_host_key(secrets_dir)
    sops = make_sops_secrets(secrets_dir, {HOST_KEY_SECRET: private, LUKS_SECRET: AUTO_PASSPHRASE})
    flake = lab.make_flake(["clawsiecats-luks", "clawsiecats"])
    rig.env.update(
        {
            "DEPLOYBOT_SSH_KEY": str(lab.operator_key),
            "DEPLOYBOT_FLAKE": str(flake),
            "DEPLOYBOT_NIXOS_ANYWHERE": lab.nixos_anywhere_prefix(**(nixos_anywhere or {})),
            "DEPLOYBOT_NIX": lab.nix_prefix(build_delay=nix_build_delay),
            "DEPLOYBOT_SOPS": sops.sops,
            "SOPS_AGE_KEY_FILE": str(sops.age_key_file),
        }
    )
    return World(lab=lab, rig=rig, root=root, flake=flake, sops=sops, host_private_key=private)
