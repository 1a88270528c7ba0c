"""The composition root: settings + inventory + store → the engine and the chat surface.

Everything is built here and handed to whatever uses it; nothing else assembles parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telegram import BotCommand, Update
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, ContextTypes
from telegram.request import BaseRequest

from bot.chat.access import Access
from bot.chat.commands import CommandTable
from bot.chat.confirm import Confirmations
from bot.chat.port import ChatPort
from bot.chat.questions import Answers
from bot.config.current import Current
from bot.config.inventory import Inventory
from bot.config.settings import Settings
from bot.config.tuning import Tuning
from bot.flows.engine import Engine, build_engine
from bot.flows.recovery import Interrupted
from bot.flows.reload import Reloader
from bot.flows.report import Reporter
from bot.flows.report.schedule import register_weekly
from bot.flows.watch.schedule import Schedules
from bot.jobs.retention import FIRST_PRUNE, PRUNE_EVERY, Retention
from bot.jobs.runner import JobRunner
from handlers import register_all
from handlers.chat_port import TelegramChat
from handlers.door import ScreenedUpdates
from handlers.priority import SecretsFirst
from handlers.registry import BotContext
from handlers.request import QuietRequest
from store import Store

log = logging.getLogger(__name__)
BotApplication = Application[Any, Any, Any, Any, Any, Any]


@dataclass
class Parts:
    """What the composition root built, for the bot's own start and stop (and tests)."""

    settings: Settings
    current: Current
    store: Store
    tuning: Tuning
    access: Access
    chat: ChatPort
    answers: Answers
    confirmations: Confirmations
    jobs: JobRunner
    engine: Engine
    commands: CommandTable
    schedules: Schedules | None
    reloader: Reloader
    retention: Retention
    reporter: Reporter
    probes_enabled: bool = True
    started_at: float = field(default_factory=time.monotonic)
    #: What the start leaves to run beside the chat (see ``_post_init``).
    after_start: asyncio.Task[None] | None = None

    @property
    def inventory(self) -> Inventory:
        """The inventory in force (a reload may have replaced the one of the start)."""
        return self.current.inventory


async def _on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log the failure without the update: it may hold a passphrase someone just typed."""
    update_id = update.update_id if isinstance(update, Update) else None
    error = context.error
    log.error("handler failed on update %s: %s", update_id, type(error).__name__, exc_info=error)
    if isinstance(update, Update) and update.effective_chat is not None:
        try:
            await context.bot.send_message(
                update.effective_chat.id, "Something went wrong on my side; it is logged."
            )
        except Exception:
            log.debug("could not report the failure to the chat")


def build_application(
    settings: Settings,
    inventory: Inventory,
    store: Store,
    *,
    token: str,
    base_url: str,
    request: BaseRequest | None = None,
    rate_limiter: bool = True,
    tuning: Tuning | None = None,
    probes_enabled: bool = True,
    read_settings: Callable[[], Settings] | None = None,
) -> tuple[BotApplication, Parts]:
    """The Application with every handler, and the parts behind it.

    ``request`` replaces the HTTP transport (the console's in-process Bot API).
    ``read_settings`` reads the settings again for a reload (None: no reload).
    """
    answers = Answers()
    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(base_url)
        .context_types(ContextTypes(context=BotContext))
        .concurrent_updates(SecretsFirst(answers))
    )
    screened: ScreenedUpdates | None = None
    if request is not None:
        builder = builder.request(request).get_updates_request(request)
    else:
        # Strangers are refused before PTB parses their updates (handlers/door.py); no
        # answer that is not JSON reaches a log (handlers/request.py).
        screened = ScreenedUpdates()
        builder = builder.get_updates_request(screened).request(
            QuietRequest(connection_pool_size=256)  # PTB's own default
        )
    limiter = AIORateLimiter(max_retries=3) if rate_limiter else None
    application: BotApplication = (
        builder.rate_limiter(limiter).post_init(_post_init).post_stop(_post_stop).build()  # type: ignore[arg-type]
    )
    tuning = tuning or Tuning()
    chat = TelegramChat(application.bot)
    current = Current(inventory, settings.admins)
    access = Access(current)
    confirmations = Confirmations()
    jobs = JobRunner(
        store,
        chat,
        settings.state_dir,
        max_parallel=tuning.max_parallel_jobs,
        progress_interval=tuning.progress_interval,
    )
    engine = build_engine(
        settings=settings,
        tuning=tuning,
        current=current,
        store=store,
        chat=chat,
        answers=answers,
        confirmations=confirmations,
        access=access,
        jobs=jobs,
        probes_enabled=probes_enabled,
    )
    schedules = None
    if application.job_queue is not None:
        schedules = Schedules(
            application.job_queue,
            current,
            engine.watcher,
            engine.reboot_tester,
            access,
            engine.outbox,
            engine.fleet,
            enabled=probes_enabled,
        )
    reloader = Reloader(
        current=current,
        settings=settings,
        read_settings=read_settings,
        schedules=schedules,
        watcher=engine.watcher,
        fleet=engine.fleet,
        store=store,
        chat=chat,
    )
    reporter = Reporter(records=engine.records, chat=chat, current=current)
    commands = register_all(
        application,
        current=current,
        store=store,
        access=access,
        chat=chat,
        answers=answers,
        confirmations=confirmations,
        jobs=jobs,
        engine=engine,
        schedules=schedules,
        reloader=reloader,
        reporter=reporter,
        confirm_timeout=tuning.confirm_timeout,
        ssh_timeout=tuning.ssh_timeout,
        probes_enabled=probes_enabled,
        screened=screened,
    )
    parts = Parts(
        settings=settings,
        current=current,
        store=store,
        tuning=tuning,
        access=access,
        chat=chat,
        answers=answers,
        confirmations=confirmations,
        jobs=jobs,
        engine=engine,
        commands=commands,
        schedules=schedules,
        reloader=reloader,
        retention=Retention(store, engine.records, jobs.log_dir, keep_days=settings.keep_days),
        reporter=reporter,
        probes_enabled=probes_enabled,
    )
    application.bot_data["parts"] = parts
    application.add_error_handler(_on_error)
    return application, parts


def parts_of(application: BotApplication) -> Parts:
    parts = application.bot_data["parts"]
    assert isinstance(parts, Parts)
    return parts


async def _post_init(application: BotApplication) -> None:
    """What must be done before the first update is read, and nothing more (docs/telegram.md).

    PTB reads no update until this returns, so everything that waits on machines or on
    sops (each machine's keys are resolved once, one ``sops decrypt`` per sops-held key)
    runs afterwards, beside the chat, in ``after_start``: a person's command never waits
    for it. Ending the jobs a previous process left running stays here, so no new job can
    start before they are marked interrupted.
    """
    parts = parts_of(application)
    await application.bot.set_my_commands(
        [BotCommand(spec.name, spec.summary) for spec in parts.commands]
    )
    interrupted = await parts.engine.recovery.end_interrupted_jobs()
    if parts.schedules is not None:
        parts.schedules.start()
    if application.job_queue is not None:

        async def prune(context: object) -> None:
            await parts.retention.prune()

        application.job_queue.run_repeating(
            prune, interval=PRUNE_EVERY, first=FIRST_PRUNE, name="prune history"
        )
        if parts.probes_enabled:  # the example inventory's machines are not anyone's
            register_weekly(application.job_queue, parts.settings.report, parts.reporter)
    parts.after_start = asyncio.create_task(_after_start(parts, interrupted), name="after start")


async def _after_start(parts: Parts, interrupted: Interrupted) -> None:
    try:
        await parts.engine.recovery.tell(interrupted)
    except Exception:
        log.exception("the checks after the start failed")


async def _post_stop(application: BotApplication) -> None:
    parts = parts_of(application)
    if parts.after_start is not None:
        parts.after_start.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await parts.after_start
    await parts.engine.shutdown()
    await parts.jobs.shutdown()
