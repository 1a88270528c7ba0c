"""The bot's side of a VM test: the fake Bot API, an inventory naming the guests with
their pinned keys, and ``deploybot run`` as a process of its own."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.botprocess import BotProcess
from tests.botrig import BotRig
from tests.fake_telegram import FakeMessage, FakeTelegram, FakeUser
from tests.people import ADMIN, OPERATOR
from tests.vm import nixos
from tests.vm.control import Machine

PROMPT = "waiting for its disk passphrase"
#: Generous bounds: a guest under TCG boots in minutes, not seconds.
BOOT = 600.0
#: How long a job (an update, a rollback) may take under TCG.
JOB = 900.0
ENDED = re.compile(r"^(Update|Rollback) .* — (succeeded|failed|cancelled|interrupted) after")
#: The stages a passed reboot test reports, each with its time.
STAGES = {"reboot", "down", "initrd", "unlock", "boot", "health"}


def stage_times(report: FakeMessage) -> set[str]:
    """The stages named on a reboot test's report (its second line)."""
    line = report.body.splitlines()[1]
    return {part.split()[0] for part in line.split(" · ")}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


class VmWorld:
    def __init__(self, tg: FakeTelegram, root: Path) -> None:
        self.tg = tg
        self.root = root
        self.entries: dict[str, str] = {}
        self.env: dict[str, str] = {"DEPLOYBOT_ADMINS": str(ADMIN)}
        self.rig = BotRig(tg=tg, root=root, env=self.env)
        self.bot: BotProcess | None = None

    @property
    def output(self) -> Path:
        return self.root / "bot-output.log"

    @property
    def op(self) -> FakeUser:
        return self.tg.user(OPERATOR, "opal")

    @property
    def admin(self) -> FakeUser:
        return self.tg.user(ADMIN, "ada")

    def machine(self, name: str, machine: Machine, /, *, pin: bool = True, **keys: Any) -> None:
        """``[machines.name]`` for a guest; ``pin``: its keys in the inventory."""
        image = machine.image
        entry: dict[str, Any] = {
            "host": machine.address,
            "ssh_port": machine.guest.ssh_port,
            "initrd_port": machine.guest.initrd_port,
            "luks": True,
            "unlock": image.unlock,
            "operators": [OPERATOR],
            "persist_dir": "",
            "boot_timeout": "8m",
            "unlock_timeout": "5m",
            "probe_interval": "1h",
            "reboot_check": "",
        }
        if pin:
            entry["host_key"] = image.keys.system_public
            entry["initrd_host_key"] = image.keys.initrd_public
        entry.update(keys)
        self.env["DEPLOYBOT_SSH_KEY"] = str(image.keys.bot)
        lines = [f"[machines.{name}]", *(f"{k} = {_toml(v)}" for k, v in entry.items())]
        self.entries[name] = "\n".join(lines) + "\n"

    async def start(self, **env: str) -> BotProcess:
        """``deploybot run`` on the inventory written so far."""
        for user in (self.op, self.admin):
            assert self.tg.bot_messages(user) == []
        self.rig.write_inventory("\n".join(self.entries.values()))
        self.bot = BotProcess(self.rig, self.output, extra_env=dict(env))
        await self.bot.start()
        return self.bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.stop()
            self.bot = None

    async def says(self, user: FakeUser, text: str, *, timeout: float) -> FakeMessage:
        return await self.tg.wait_for_message(user, lambda m: text in m.body, timeout=timeout)

    async def reboot_now(self, name: str = "vm") -> None:
        """``/reboot <name>`` as the operator, and the "Reboot" button pressed."""
        await self.tg.send_text(self.op, f"/reboot {name}")
        ask = await self.says(self.op, f"Reboot {name} now", timeout=60)
        await self.tg.press_button(self.op, ask, "Reboot")

    async def answer(self, user: FakeUser, secret: str, *, timeout: float) -> FakeMessage:
        """Wait for the unlock prompt and answer it; the user's (deleted) message."""
        prompt = await self.says(user, PROMPT, timeout=timeout)
        return await self.tg.send_text(user, secret, reply_to=prompt)

    def use_flake(self, folder: Path) -> None:
        """The lab's flake (tests/vm/nixos.py) and a nix whose store is in ``folder``."""
        self.env["DEPLOYBOT_NIX"] = nixos.bot_nix(folder / "bot-store")
        self.env["DEPLOYBOT_FLAKE"] = nixos.write_flake(folder / "flake")

    async def confirm(self, command: str, press: str) -> FakeMessage:
        """Send ``command`` as the operator and press ``press`` on the question it asks."""
        op, tg = self.op, self.tg
        await tg.send_text(op, command)
        asked = await tg.wait_for_message(op, lambda m: press in str(m.buttons), timeout=JOB)
        await tg.press_button(op, asked, press)
        return asked

    async def job_end(self, user: FakeUser, job: int) -> FakeMessage:
        """The job's message once its headline says how it ended."""

        def ended(message: FakeMessage) -> bool:
            head = message.body.split("\n")[0]
            return f"(job {job})" in head and bool(ENDED.search(head))

        return await self.tg.wait_for_message(user, ended, edits=True, since=0, timeout=JOB)
