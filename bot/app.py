"""The composition root: settings + inventory + store → the engine and the chat surface.

The shared parts (``build_basics``), the flows on them (``build_engine``) and the
Application are built here; the chat surface's ``register_all`` only hands the engine's
flows to the command families. Also the bot's start and stop (docs/telegram.md).
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
from bot.chat.answers import Answers
from bot.chat.asker import Asker
from bot.chat.commands import CommandTable
from bot.chat.confirm import Confirmations
from bot.chat.port import ChatPort
from bot.config.current import Current
from bot.config.inventory import Inventory, Machine
from bot.config.settings import Settings
from bot.config.tuning import Tuning
from bot.flows.adopt import Adopter
from bot.flows.basics import Basics
from bot.flows.deploy.pipeline import Deployer
from bot.flows.engine import Engine
from bot.flows.recovery import Interrupted, Recovery
from bot.flows.reload import Reloader
from bot.flows.report import Reporter
from bot.flows.report.schedule import register_weekly
from bot.flows.rollout.runner import Rollouts
from bot.flows.route import Router
from bot.flows.unlock import Unlocker
from bot.flows.update.pipeline import Updater
from bot.flows.watch.outbox import Outbox
from bot.flows.watch.reboot_test import RebootTester
from bot.flows.watch.schedule import JobQueueLike, Schedules
from bot.flows.watch.watcher import Watcher
from bot.jobs.context import JobContext, JobFailed
from bot.jobs.retention import FIRST_PRUNE, PRUNE_EVERY, Retention
from bot.jobs.runner import JobRunner
from bot.remote.fleet import Fleet
from bot.remote.health import CheckLimits
from bot.remote.pins import SopsHostKeys
from bot.remote.target import Reach
from handlers import register_all
from handlers.plumbing.chat_port import TelegramChat
from handlers.plumbing.door import ScreenedUpdates
from handlers.plumbing.priority import SecretsFirst
from handlers.plumbing.registry import BotContext
from handlers.plumbing.request import QuietRequest
from store import Store
from store.health import HealthStore

log = logging.getLogger(__name__)
BotApplication = Application[Any, Any, Any, Any, Any, Any]


@dataclass
class Parts:
    """What the composition root built, for the bot's own start and stop (and tests)."""

    engine: Engine
    commands: CommandTable
    started_at: float = field(default_factory=time.monotonic)
    #: What the start leaves to run beside the chat (see ``_post_init``).
    after_start: asyncio.Task[None] | None = None

    @property
    def basics(self) -> Basics:
        return self.engine.basics

    @property
    def store(self) -> Store:
        return self.engine.basics.store

    @property
    def inventory(self) -> Inventory:
        """The inventory in force (a reload may have replaced the one of the start)."""
        return self.engine.basics.current.inventory


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
        # Strangers are refused before PTB parses their updates (handlers/plumbing/door.py); no
        # answer that is not JSON reaches a log (handlers/plumbing/request.py).
        screened = ScreenedUpdates()
        builder = builder.get_updates_request(screened).request(
            QuietRequest(connection_pool_size=256)  # PTB's own default
        )
    limiter = AIORateLimiter(max_retries=3) if rate_limiter else None
    application: BotApplication = (
        builder.rate_limiter(limiter).post_init(_post_init).post_stop(_post_stop).build()  # type: ignore[arg-type]
    )
    tuning = tuning or Tuning()
    basics = build_basics(
        settings,
        tuning,
        inventory,
        store,
        answers,
        TelegramChat(application.bot),
        probes_enabled=probes_enabled,
    )
    engine = build_engine(basics, application.job_queue, read_settings=read_settings)
    commands = register_all(application, engine, screened=screened)
    parts = Parts(engine=engine, commands=commands)
    application.bot_data["parts"] = parts
    application.add_error_handler(_on_error)
    return application, parts


def build_basics(
    settings: Settings,
    tuning: Tuning,
    inventory: Inventory,
    store: Store,
    answers: Answers,
    chat: ChatPort,
    *,
    probes_enabled: bool,
) -> Basics:
    """The parts every flow shares, each built once."""
    current = Current(inventory, settings.admins)
    confirmations = Confirmations()
    reach = Reach(
        client_key=settings.ssh_key,
        ssh_timeout=tuning.ssh_timeout,
        poll=tuning.reboot_poll,
    )
    limits = CheckLimits(check_timeout=tuning.check_timeout, disk_limit=tuning.disk_alert_percent)
    sops = settings.sops_reader()
    return Basics(
        settings=settings,
        tuning=tuning,
        current=current,
        store=store,
        health=HealthStore(store),
        chat=chat,
        answers=answers,
        confirmations=confirmations,
        access=Access(current),
        asker=Asker(chat, answers, confirmations),
        jobs=JobRunner(
            store,
            chat,
            settings.state_dir,
            max_parallel=tuning.max_parallel_jobs,
            progress_interval=tuning.progress_interval,
        ),
        fleet=Fleet(store, reach, SopsHostKeys(sops), limits=limits),
        sops=sops,
        probes_enabled=probes_enabled,
    )


def build_engine(
    basics: Basics,
    queue: JobQueueLike | None,
    *,
    read_settings: Callable[[], Settings] | None = None,
) -> Engine:
    """The flows, built on ``basics`` and handed to each other; ``queue`` runs schedules."""
    b, tuning = basics, basics.tuning
    unlocker = Unlocker(b)

    async def after_install(machine: Machine, ctx: JobContext) -> str:
        """A fresh LUKS install waits in its initrd: unlock it as part of the job."""
        ctx.output(f"asking for {machine.name}'s disk passphrase to unlock it")
        result = await unlocker.unlock(machine, trigger=f"install job {ctx.job.id}")
        if not result.ok:
            raise JobFailed(result.summary, phase="unlock")
        return result.summary

    outbox = Outbox(b.chat, tuning.alert_batch)
    watcher = Watcher(b, outbox=outbox, unlocker=unlocker)
    tester = RebootTester(b, unlocker=unlocker, watcher=watcher)
    updater = Updater(b, tester=tester)
    rollouts = Rollouts(
        jobs=b.jobs,
        updater=updater,
        fleet=b.fleet,
        store=b.store,
        asker=b.asker,
        settings=b.settings,
        tuning=tuning,
        current=b.current,
        offers=updater.offers,
    )
    schedules = None
    if queue is not None:
        schedules = Schedules(queue, b, watcher=watcher, tester=tester, outbox=outbox)
    return Engine(
        basics=b,
        router=Router(b),
        deployer=Deployer(b, on_initrd=after_install),
        updater=updater,
        rollouts=rollouts,
        unlocker=unlocker,
        adopter=Adopter(b),
        watcher=watcher,
        outbox=outbox,
        reboot_tester=tester,
        schedules=schedules,
        reloader=Reloader(b, read_settings=read_settings, schedules=schedules, watcher=watcher),
        reporter=Reporter(health=b.health, chat=b.chat, current=b.current),
        retention=Retention(b.store, b.health, b.jobs.log_dir, keep_days=b.settings.keep_days),
        recovery=Recovery(b),
    )


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
    engine = parts.engine
    interrupted = await engine.recovery.end_interrupted_jobs()
    if engine.schedules is not None:
        engine.schedules.start()
    if application.job_queue is not None:

        async def prune(context: object) -> None:
            await engine.retention.prune()

        application.job_queue.run_repeating(
            prune, interval=PRUNE_EVERY, first=FIRST_PRUNE, name="prune history"
        )
        if parts.basics.probes_enabled:  # the example inventory's machines are nobody's
            register_weekly(application.job_queue, parts.basics.settings.report, engine.reporter)
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
