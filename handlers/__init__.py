"""The chat surface: one module per command family, wired by ``register_all``."""

from __future__ import annotations

from typing import Any

from telegram.ext import Application

from bot.chat.access import Access
from bot.chat.commands import CommandTable
from bot.chat.confirm import Confirmations
from bot.chat.port import ChatPort
from bot.chat.questions import Answers
from bot.config.inventory import Inventory
from bot.flows.engine import Engine
from bot.flows.watch.schedule import Schedules
from bot.jobs.runner import JobRunner
from handlers import buttons, conversation, gate
from handlers.deploy import DeployCommands
from handlers.health import HealthCommands
from handlers.info import InfoCommands
from handlers.jobs import JobCommands
from handlers.registry import install, table_of
from handlers.unlock import UnlockCommands
from store import Store

#: The command families, in the order /help lists them.
FAMILIES = (InfoCommands, DeployCommands, UnlockCommands, HealthCommands, JobCommands)


def command_table() -> CommandTable:
    """Every declared command; the same table the running bot uses."""
    return table_of(FAMILIES)


def register_all(
    application: Application[Any, Any, Any, Any, Any, Any],
    *,
    inventory: Inventory,
    store: Store,
    access: Access,
    chat: ChatPort,
    answers: Answers,
    confirmations: Confirmations,
    jobs: JobRunner,
    engine: Engine,
    schedules: Schedules | None,
    confirm_timeout: float,
    probes_enabled: bool,
) -> CommandTable:
    """Install the gate first, then every command family, then buttons and free text."""
    info = InfoCommands(
        access=access,
        inventory=inventory,
        store=store,
        health=engine.records,
        probes_enabled=probes_enabled,
    )
    families: list[object] = [
        info,
        DeployCommands(engine.deployer, engine.updater),
        UnlockCommands(unlocker=engine.unlocker, answers=answers, chat=chat),
        HealthCommands(
            tester=engine.reboot_tester,
            watcher=engine.watcher,
            schedules=schedules,
            access=access,
            chat=chat,
            asker=engine.asker,
            confirm_timeout=confirm_timeout,
        ),
        JobCommands(store=store, jobs=jobs, access=access),
    ]
    table = table_of(families)
    info.table = table
    gate.register(
        application,
        gate.Gate(
            access=access,
            table=table,
            inventory=inventory,
            store=store,
            probes_enabled=probes_enabled,
        ),
    )
    install(application, families)
    buttons.register(application, buttons.Buttons(confirmations, store))
    conversation.register(application, conversation.Conversation(answers))
    return table
