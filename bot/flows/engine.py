"""The engine's flows, built together so they can hand over to each other."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.inventory import Machine
from bot.flows.deploy.pipeline import Deployer
from bot.flows.services import Services
from bot.flows.unlock import Unlocker
from bot.flows.watch.reboot_test import RebootTester
from bot.flows.watch.watcher import Watcher
from bot.jobs.runner import JobContext, JobFailed


@dataclass
class Engine:
    deployer: Deployer
    unlocker: Unlocker
    watcher: Watcher
    reboot_tester: RebootTester

    async def shutdown(self) -> None:
        await self.watcher.shutdown()
        await self.unlocker.shutdown()


def build_engine(services: Services) -> Engine:
    unlocker = Unlocker(services)

    async def after_install(machine: Machine, ctx: JobContext) -> str:
        """A fresh LUKS install waits in its initrd: unlock it as part of the job."""
        ctx.output(f"asking for {machine.name}'s disk passphrase to unlock it")
        result = await unlocker.unlock(machine, trigger=f"install job {ctx.job.id}")
        if not result.ok:
            raise JobFailed(result.summary, phase="unlock")
        return result.summary

    watcher = Watcher(services, unlocker)
    return Engine(
        deployer=Deployer(services, on_initrd=after_install),
        unlocker=unlocker,
        watcher=watcher,
        reboot_tester=RebootTester(services, unlocker, watcher),
    )
