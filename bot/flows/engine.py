"""The engine's flows, built together so they can hand over to each other."""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat.access import Access
from bot.chat.asker import Asker
from bot.chat.confirm import Confirmations
from bot.chat.port import ChatPort
from bot.chat.questions import Answers
from bot.config.current import Current
from bot.config.inventory import Machine
from bot.config.settings import Settings
from bot.config.tuning import Tuning
from bot.flows.adopt import Adopter
from bot.flows.deploy.pipeline import Deployer
from bot.flows.recovery import Recovery
from bot.flows.rollout.runner import Rollouts
from bot.flows.unlock import Unlocker
from bot.flows.update.pipeline import Updater
from bot.flows.watch.outbox import Outbox
from bot.flows.watch.reboot_test import RebootTester
from bot.flows.watch.watcher import Watcher
from bot.jobs.runner import JobContext, JobFailed, JobRunner
from bot.remote.fleet import Fleet
from bot.remote.pins import SopsHostKeys
from bot.remote.target import Reach
from store import Store
from store.health import HealthStore


@dataclass
class Engine:
    fleet: Fleet
    asker: Asker
    deployer: Deployer
    unlocker: Unlocker
    watcher: Watcher
    reboot_tester: RebootTester
    outbox: Outbox
    records: HealthStore
    adopter: Adopter
    updater: Updater
    rollouts: Rollouts
    recovery: Recovery

    async def shutdown(self) -> None:
        await self.updater.shutdown()
        await self.watcher.shutdown()
        await self.unlocker.shutdown()
        self.fleet.close()  # the logins kept open between probes


def build_engine(
    *,
    settings: Settings,
    tuning: Tuning,
    current: Current,
    store: Store,
    chat: ChatPort,
    answers: Answers,
    confirmations: Confirmations,
    access: Access,
    jobs: JobRunner,
    probes_enabled: bool = True,
) -> Engine:
    reach = Reach(
        client_key=settings.ssh_key,
        ssh_timeout=tuning.ssh_timeout,
        check_timeout=tuning.check_timeout,
        disk_limit=tuning.disk_alert_percent,
        poll=tuning.reboot_poll,
    )
    sops = settings.sops_reader()
    fleet = Fleet(store, reach, SopsHostKeys(sops))
    asker = Asker(chat, answers, confirmations)
    unlocker = Unlocker(
        fleet=fleet,
        store=store,
        chat=chat,
        asker=asker,
        access=access,
        sops=sops,
        prompt_timeout=tuning.ssh_timeout,
        settle=tuning.unlock_settle,
        confirm_timeout=tuning.confirm_timeout,
        down_timeout=tuning.reboot_down_timeout,
    )

    async def after_install(machine: Machine, ctx: JobContext) -> str:
        """A fresh LUKS install waits in its initrd: unlock it as part of the job."""
        ctx.output(f"asking for {machine.name}'s disk passphrase to unlock it")
        result = await unlocker.unlock(machine, trigger=f"install job {ctx.job.id}")
        if not result.ok:
            raise JobFailed(result.summary, phase="unlock")
        return result.summary

    outbox = Outbox(chat, tuning.alert_batch)
    records = HealthStore(store)
    watcher = Watcher(
        current=current,
        fleet=fleet,
        store=store,
        records=records,
        access=access,
        outbox=outbox,
        unlocker=unlocker,
        concurrency=tuning.probe_concurrency,
        alert_after=tuning.alert_after,
        enabled=probes_enabled,
    )
    deployer = Deployer(
        jobs=jobs,
        fleet=fleet,
        store=store,
        chat=chat,
        asker=asker,
        sops=sops,
        settings=settings,
        tuning=tuning,
        current=current,
        on_initrd=after_install,
    )
    tester = RebootTester(
        jobs=jobs,
        fleet=fleet,
        store=store,
        chat=chat,
        access=access,
        unlocker=unlocker,
        watcher=watcher,
        records=records,
        down_timeout=tuning.reboot_down_timeout,
    )
    adopter = Adopter(
        fleet=fleet,
        store=store,
        chat=chat,
        asker=asker,
        confirm_timeout=tuning.confirm_timeout,
        ssh_timeout=tuning.ssh_timeout,
    )
    updater = Updater(
        jobs=jobs,
        fleet=fleet,
        store=store,
        chat=chat,
        asker=asker,
        settings=settings,
        tuning=tuning,
        tester=tester,
        current=current,
    )
    rollouts = Rollouts(
        jobs=jobs,
        updater=updater,
        fleet=fleet,
        store=store,
        asker=asker,
        settings=settings,
        tuning=tuning,
        current=current,
        offers=updater.offers,
    )
    return Engine(
        fleet,
        asker,
        deployer,
        unlocker,
        watcher,
        tester,
        outbox,
        records,
        adopter,
        updater,
        rollouts,
        Recovery(
            current=current,
            fleet=fleet,
            store=store,
            chat=chat,
            state_dir=settings.state_dir,
            probes_enabled=probes_enabled,
        ),
    )
