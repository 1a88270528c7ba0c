"""The bot under test: the real Application, polling the fake Bot API over HTTP.

``BotRig`` writes an inventory and settings into a temporary folder, builds the bot the
way ``deploybot run`` does (same composition root, same handlers), starts polling, and
stops it cleanly — also when a test fails. ``restart()`` stops and starts it again on
the same database and state folder, like a service manager would.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.app import BotApplication, Parts, build_application
from bot.config.inventory import Inventory, load_inventory
from bot.config.settings import Settings, load_settings
from bot.config.tuning import Tuning
from bot.flows.engine import Engine
from store import Store
from tests.fake_telegram import FakeMessage, FakeTelegram, FakeUser
from tests.waiting import eventually

FAST = Tuning(
    confirm_timeout=20.0,
    answer_timeout=20.0,
    progress_interval=0.2,
    ssh_timeout=5.0,
    reboot_poll=0.2,
    nixos_anywhere_timeout=120.0,
)


@dataclass
class BotRig:
    tg: FakeTelegram
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    tuning: Tuning = FAST
    app: BotApplication | None = None
    parts: Parts | None = None
    store: Store | None = None
    # How long the store waits for a database lock (None: the bot's default).
    db_busy_timeout: float | None = None

    @property
    def settings(self) -> Settings:
        environ = {
            "TELEGRAM_BOT_TOKEN": self.tg.token,
            "TELEGRAM_API_URL": self.tg.base_url,
            "DEPLOYBOT_INVENTORY": str(self.root / "machines.toml"),
            "DEPLOYBOT_DB": str(self.root / "deploybot.sqlite3"),
            "DEPLOYBOT_STATE_DIR": str(self.root / "state"),
            **self.env,
        }
        return load_settings(None, environ)

    def write_inventory(self, text: str) -> Path:
        path = self.root / "machines.toml"
        path.write_text(text)
        return path

    @property
    def svc(self) -> Parts:
        """What the running bot was built of (its store, inventory, tuning …)."""
        assert self.parts is not None, "the bot is not running"
        return self.parts

    @property
    def engine(self) -> Engine:
        """The engine the running bot was built with (its deployer and unlocker)."""
        return self.svc.engine

    async def start(self, inventory: str | None = None, **tuning: Any) -> BotRig:
        if inventory is not None:
            self.write_inventory(inventory)
        if tuning:
            self.tuning = dataclasses.replace(self.tuning, **tuning)
        settings = self.settings
        loaded: Inventory = load_inventory(settings.inventory)
        if self.db_busy_timeout is None:
            self.store = await Store.open(settings.db)
        else:
            self.store = await Store.open(settings.db, busy_timeout=self.db_busy_timeout)
        assert settings.token is not None
        self.app, self.parts = build_application(
            settings,
            loaded,
            self.store,
            token=settings.token,
            base_url=settings.api_url,
            tuning=self.tuning,
            # /reload reads what the rig says now, as the CLI reads its settings file again.
            read_settings=lambda: self.settings,
        )
        # The same order as Application.run_polling, which tests cannot use.
        await self.app.initialize()
        if self.app.post_init is not None:
            await self.app.post_init(self.app)
        await self.app.start()
        assert self.app.updater is not None
        await self.app.updater.start_polling(poll_interval=0, timeout=1)
        return self

    async def stop(self) -> None:
        app, self.app = self.app, None
        if app is not None:
            try:
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                if app.running:
                    await app.stop()
                    if app.post_stop is not None:
                        await app.post_stop(app)
            finally:
                await app.shutdown()
        if self.store is not None:
            await self.store.close()
            self.store = None
        self.parts = None

    async def restart(self) -> BotRig:
        await self.stop()
        return await self.start()

    async def ask(
        self, user: FakeUser, text: str, *, chat: Any = None, timeout: float = 10.0
    ) -> FakeMessage:
        """Send ``text`` and return the bot's next new text message in that chat.

        Documents are skipped: a failed job's log may still be on its way when a test asks
        its next question.
        """
        target = chat if chat is not None else user
        await self.tg.send_text(user, text, chat=chat)
        return await self.tg.wait_for_message(target, lambda m: m.document is None, timeout=timeout)


async def audit_of(rig: BotRig, user_id: int, count: int) -> list[tuple[str, str, str]]:
    async def entries() -> list[tuple[str, str, str]]:
        found = [
            (e.action, e.machine, e.decision)
            for e in await rig.svc.store.recent_audit(100)
            if e.user_id == user_id
        ]
        return found if len(found) >= count else []

    return list(reversed(await eventually(entries, what=f"{count} audit entries")))
