"""The chat surface: one module per command family, all wired by ``register_all``."""

from __future__ import annotations

from telegram.ext import Application

from bot.flows.engine import Engine
from bot.flows.services import Services
from handlers import buttons, conversation, deploy, gate, health, info, jobs, unlock


def register_all(application: Application, services: Services, engine: Engine) -> None:  # type: ignore[type-arg]
    """Install the gate first, then every command family, then the free-text handler."""
    gate.register(application, services)
    info.register(application, services)
    jobs.register(application, services)
    deploy.register(application, services, engine.deployer)
    unlock.register(application, services, engine.unlocker)
    health.register(application, services, engine)
    buttons.register(application, services)
    conversation.register(application, services)
