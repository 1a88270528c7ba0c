"""The composition root: settings + inventory + store → services → Application."""

from __future__ import annotations

import logging
from typing import Any

from telegram import BotCommand, Update
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, ContextTypes
from telegram.request import BaseRequest

from bot.chat.access import Access
from bot.chat.commands import COMMANDS
from bot.chat.questions import Answers
from bot.config.inventory import Inventory
from bot.config.settings import Settings
from bot.flows.engine import Engine, build_engine
from bot.flows.recovery import clear_crash_leftovers, look_after_interruption
from bot.flows.services import Services, Tuning
from bot.flows.watch.schedule import Schedules
from bot.jobs.runner import JobRunner
from handlers import register_all
from handlers.chat_port import TelegramChat
from store import Store

log = logging.getLogger(__name__)
BotApplication = Application[Any, Any, Any, Any, Any, Any]


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
) -> tuple[BotApplication, Services]:
    """The Application with every handler, and the services behind it.

    ``request`` replaces the HTTP transport (the console's in-process Bot API).
    """
    builder = ApplicationBuilder().token(token).base_url(base_url)
    if request is not None:
        builder = builder.request(request).get_updates_request(request)
    limiter = AIORateLimiter(max_retries=3) if rate_limiter else None
    application: BotApplication = (
        builder.rate_limiter(limiter).post_init(_post_init).post_stop(_post_stop).build()  # type: ignore[arg-type]
    )
    tuning = tuning or Tuning()
    answers = Answers()
    chat = TelegramChat(application.bot, answers)
    services = Services(
        settings=settings,
        inventory=inventory,
        store=store,
        access=Access(admins=settings.admins, inventory=inventory),
        chat=chat,
        jobs=JobRunner(
            store,
            chat,
            settings.state_dir,
            max_parallel=tuning.max_parallel_jobs,
            progress_interval=tuning.progress_interval,
        ),
        answers=answers,
        tuning=tuning,
        probes_enabled=probes_enabled,
    )
    engine = build_engine(services)
    application.bot_data["services"] = services
    application.bot_data["engine"] = engine
    if application.job_queue is not None:
        application.bot_data["schedules"] = Schedules(
            application.job_queue, inventory, engine.watcher, engine.reboot_tester
        )
    register_all(application, services, engine)
    application.add_error_handler(_on_error)
    return application, services


def _services(application: BotApplication) -> Services:
    services = application.bot_data["services"]
    assert isinstance(services, Services)
    return services


async def _post_init(application: BotApplication) -> None:
    services = _services(application)
    commands = [
        BotCommand(spec.name, spec.summary)
        for spec in COMMANDS.values()
        if spec.name in services.commands
    ]
    await application.bot.set_my_commands(commands)
    await tell_interrupted_jobs(services)
    schedules = application.bot_data.get("schedules")
    if isinstance(schedules, Schedules):
        schedules.start()


async def _post_stop(application: BotApplication) -> None:
    engine = application.bot_data["engine"]
    assert isinstance(engine, Engine)
    await engine.shutdown()
    await _services(application).jobs.shutdown()


async def tell_interrupted_jobs(services: Services) -> None:
    """Jobs a previous process left running end as ``interrupted``; their chats are told.

    What that process left behind is cleared first, and each machine concerned is looked
    at again, so the message says where it stands. Nothing is started again.
    """
    import asyncio

    stopped = await clear_crash_leftovers(services.settings.state_dir)
    jobs = await services.store.interrupt_active_jobs()
    names = sorted({job.machine for job in jobs})
    machines = [m for m in (services.inventory.get(n) for n in names) if m is not None]
    looks: dict[str, str] = {}
    if services.probes_enabled and machines:
        found = await asyncio.gather(
            *(look_after_interruption(services, m) for m in machines), return_exceptions=True
        )
        for machine, result in zip(machines, found, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not look at %s after a restart: %r", machine.name, result)
            else:
                looks[machine.name] = result
    for job in jobs:
        log.warning("job %s (%s %s) was interrupted by a restart", job.id, job.kind, job.machine)
        if job.chat_id is None:
            continue
        now = looks.get(job.machine, f"check it with /status {job.machine} before you retry")
        extra = f"\nI stopped {len(stopped)} processes it had left running." if stopped else ""
        await services.chat.post(
            job.chat_id,
            f"⏹ Job {job.id} ({job.kind} {job.machine}) was interrupted: the bot restarted "
            f"while it ran. Nothing was started again.\nNow: {now}.{extra}",
        )
