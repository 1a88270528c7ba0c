"""The chat surface: one module per command family, wired by ``register_all``."""

from __future__ import annotations

from typing import Any

from telegram.ext import Application

from bot.chat.commands import CommandTable
from bot.chat.pages import Views
from bot.flows.engine import Engine
from handlers import buttons, conversation, gate
from handlers.admin import AdminCommands
from handlers.adopt import AdoptCommands
from handlers.deploy import DeployCommands
from handlers.door import Door, ScreenedUpdates
from handlers.health import HealthCommands
from handlers.info import InfoCommands
from handlers.jobs import JobCommands
from handlers.paging import Pager
from handlers.registry import install, table_of
from handlers.report import ReportCommands
from handlers.strangers import Strangers
from handlers.unlock import UnlockCommands
from store.remembered import PageViews

#: The command families, in the order /help lists them.
FAMILIES = (
    InfoCommands,
    DeployCommands,
    UnlockCommands,
    HealthCommands,
    ReportCommands,
    JobCommands,
    AdoptCommands,
    AdminCommands,
)


def command_table() -> CommandTable:
    """Every declared command; the same table the running bot uses."""
    return table_of(FAMILIES)


def register_all(
    application: Application[Any, Any, Any, Any, Any, Any],
    engine: Engine,
    *,
    screened: ScreenedUpdates | None = None,
) -> CommandTable:
    """Install the gate first, then every command family, then buttons and free text;
    ``screened`` (the getUpdates request) gets the door in front of the gate."""
    b = engine.basics
    pager = Pager(Views(PageViews(b.store)))
    info = InfoCommands(
        access=b.access,
        store=b.store,
        health=b.health,
        pager=pager,
        probes_enabled=b.probes_enabled,
        fleet=b.fleet,
    )
    families: list[object] = [
        info,
        DeployCommands(engine.router, engine.deployer, engine.updater, engine.rollouts),
        UnlockCommands(unlocker=engine.unlocker, answers=b.answers, chat=b.chat),
        HealthCommands(
            tester=engine.reboot_tester,
            watcher=engine.watcher,
            schedules=engine.schedules,
            access=b.access,
            chat=b.chat,
            asker=b.asker,
            confirm_timeout=b.tuning.confirm_timeout,
            pager=pager,
        ),
        ReportCommands(
            reporter=engine.reporter,
            access=b.access,
            fleet=b.fleet,
            chat=b.chat,
            pager=pager,
            timeout=b.tuning.ssh_timeout,
        ),
        JobCommands(store=b.store, jobs=b.jobs, access=b.access, pager=pager),
        AdoptCommands(engine.adopter),
        AdminCommands(engine.reloader),
    ]
    table = table_of(families)
    info.table = table
    talk = conversation.Conversation(b.answers)
    strangers = Strangers(
        store=b.store,
        admins=lambda: b.current.admins,
        bot=application.bot,
        spawn=application.create_task,
    )
    the_gate = gate.Gate(
        access=b.access,
        table=table,
        current=b.current,
        store=b.store,
        strangers=strangers,
        answers=b.answers,
        on_answer=talk.on_text,
        probes_enabled=b.probes_enabled,
        fleet=b.fleet,
    )
    gate.register(application, the_gate)
    if screened is not None:
        screened.door = Door(the_gate, application.bot)
    install(application, families)
    buttons.register(application, buttons.Buttons(b.confirmations, pager, b.store))
    conversation.register(application, talk)
    return table
