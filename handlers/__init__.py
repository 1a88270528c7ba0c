"""The chat surface: the command families (``handlers.commands``) on the Telegram plumbing
(``handlers.plumbing``), wired together by ``register_all``."""

from __future__ import annotations

from typing import Any

from telegram.ext import Application

from bot.chat.access import Access
from bot.chat.commands import CommandTable
from bot.chat.confirm import Confirmations
from bot.chat.pages import Views
from bot.chat.port import ChatPort
from bot.chat.questions import Answers
from bot.config.current import Current
from bot.flows.engine import Engine
from bot.flows.reload import Reloader
from bot.flows.report import Reporter
from bot.flows.watch.schedule import Schedules
from bot.jobs.runner import JobRunner
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
from store import Store
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
    *,
    current: Current,
    store: Store,
    access: Access,
    chat: ChatPort,
    answers: Answers,
    confirmations: Confirmations,
    jobs: JobRunner,
    engine: Engine,
    schedules: Schedules | None,
    reloader: Reloader,
    reporter: Reporter,
    confirm_timeout: float,
    ssh_timeout: float,
    probes_enabled: bool,
    screened: ScreenedUpdates | None = None,
) -> CommandTable:
    """Install the gate first, then every command family, then buttons and free text;
    ``screened`` (the getUpdates request) gets the door in front of the gate."""
    pager = Pager(Views(PageViews(store)))
    info = InfoCommands(
        access=access,
        store=store,
        health=engine.records,
        pager=pager,
        probes_enabled=probes_enabled,
        fleet=engine.fleet,
    )
    families: list[object] = [
        info,
        DeployCommands(engine.deployer, engine.updater, engine.rollouts),
        UnlockCommands(unlocker=engine.unlocker, answers=answers, chat=chat),
        WatchCommands(
            tester=engine.reboot_tester,
            watcher=engine.watcher,
            schedules=schedules,
            access=access,
            chat=chat,
            asker=engine.asker,
            confirm_timeout=confirm_timeout,
            pager=pager,
        ),
        ReportCommands(
            reporter=reporter,
            access=access,
            fleet=engine.fleet,
            chat=chat,
            pager=pager,
            timeout=ssh_timeout,
        ),
        JobCommands(store=store, jobs=jobs, access=access, pager=pager),
        AdoptCommands(engine.adopter),
        AdminCommands(reloader),
    ]
    table = table_of(families)
    info.table = table
    talk = conversation.Conversation(answers)
    strangers = Strangers(
        store=store,
        admins=lambda: current.admins,
        bot=application.bot,
        spawn=application.create_task,
    )
    the_gate = gate.Gate(
        access=access,
        table=table,
        current=current,
        store=store,
        strangers=strangers,
        answers=answers,
        on_answer=talk.on_text,
        probes_enabled=probes_enabled,
        fleet=engine.fleet,
    )
    gate.register(application, the_gate)
    if screened is not None:
        screened.door = Door(the_gate, application.bot)
    install(application, families)
    detail = RolloutDetail(engine.rollouts, access, store, pager)
    buttons.register(application, buttons.Buttons(confirmations, pager, store, [detail]))
    conversation.register(application, talk)
    return table
