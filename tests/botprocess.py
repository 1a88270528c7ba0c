"""``python -m bot run`` as a separate process, as an operator's service manager starts it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.botrig import BotRig

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BotProcess:
    """``python -m bot run`` as an operator's service manager would start it."""

    rig: BotRig
    output: Path
    proc: asyncio.subprocess.Process | None = None
    #: Settings of this process on top of the rig's (a webhook, say).
    extra_env: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        rig = self.rig
        settings = rig.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYBOT_", "SOPS_"))}
        env.update(rig.env)
        env.update(
            {
                "TELEGRAM_BOT_TOKEN": rig.tg.token,
                "TELEGRAM_API_URL": rig.tg.base_url,
                "DEPLOYBOT_INVENTORY": str(settings.inventory),
                "DEPLOYBOT_DB": str(settings.db),
                "DEPLOYBOT_STATE_DIR": str(settings.state_dir),
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(self.extra_env)
        return env

    async def start(self, *, ready: str = "getUpdates") -> None:
        """Start the process and return once it calls ``ready`` (it polls for updates)."""
        tg = self.rig.tg
        mark = tg.request_mark()
        with self.output.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                env=self.environment(),
                cwd=self.rig.root,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        await tg.wait_until(
            lambda: tg.count(ready, since=mark) > 0, timeout=30, what=f"the bot calling {ready}"
        )

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the bot."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL
        self.proc = None

    async def stop(self) -> int | None:
        """SIGTERM, as ``systemctl stop`` sends; the exit code (None if it had to be killed)."""
        code = None
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                code = await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None
        return code


def kill_groups(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
