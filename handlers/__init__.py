"""The chat surface: the command families (``handlers.commands``) on the Telegram plumbing
(``handlers.plumbing``), wired together by ``register_all``."""

from __future__ import annotations

from typing import Any

from telegram.ext import Application

from bot.chat.commands import CommandTable
from bot.chat.pages import Views
from bot.flows.engine import Engine
from handlers.commands.admin import AdminCommands
from handlers.commands.adopt import AdoptCommands
from handlers.commands.deploy import DeployCommands, RolloutDetail
from handlers.commands.info import InfoCommands
from handlers.commands.jobs import JobCommands
from handlers.commands.report import ReportCommands
from handlers.commands.unlock import UnlockCommands
from handlers.commands.watching import WatchCommands
from handlers.plumbing import buttons, conversation, gate
from handlers.plumbing.door import Door, ScreenedUpdates
from handlers.plumbing.paging import Pager
from handlers.plumbing.registry import install, table_of
from handlers.plumbing.strangers import Strangers
from store.remembered import PageViews

#: The command families, in the order /help lists them.
FAMILIES = (
    InfoCommands,
    DeployCommands,
    UnlockCommands,
    WatchCommands,
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
        WatchCommands(
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
    detail = RolloutDetail(engine.rollouts, b.access, b.store, pager)
    buttons.register(application, buttons.Buttons(b.confirmations, pager, b.store, [detail]))
    conversation.register(application, talk)
    return table
