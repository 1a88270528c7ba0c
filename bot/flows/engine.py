"""The engine: the flows the composition root (``bot.app``) built, and their stop.

The chat surface reaches every flow through this one object; stopping the bot stops
the flows that hold tasks or logins, in the order that lets each finish its report.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.flows.adopt import Adopter
from bot.flows.basics import Basics
from bot.flows.deploy.pipeline import Deployer
from bot.flows.recovery import Recovery
from bot.flows.reload import Reloader
from bot.flows.report import Reporter
from bot.flows.rollout.runner import Rollouts
from bot.flows.route import Router
from bot.flows.unlock import Unlocker
from bot.flows.update.pipeline import Updater
from bot.flows.watch.outbox import Outbox
from bot.flows.watch.reboot_test import RebootTester
from bot.flows.watch.schedule import Schedules
from bot.flows.watch.watcher import Watcher
from bot.jobs.retention import Retention


@dataclass
class Engine:
    basics: Basics
    router: Router
    deployer: Deployer
    updater: Updater
    rollouts: Rollouts
    unlocker: Unlocker
    adopter: Adopter
    watcher: Watcher
    outbox: Outbox
    reboot_tester: RebootTester
    #: None without a job queue (PTB built without its job-queue extra).
    schedules: Schedules | None
    reloader: Reloader
    reporter: Reporter
    retention: Retention
    recovery: Recovery

    async def shutdown(self) -> None:
        await self.updater.shutdown()
        await self.watcher.shutdown()
        await self.unlocker.shutdown()
        self.basics.fleet.close()  # the logins kept open between probes
        await self.basics.jobs.shutdown()
