"""/jobs, /log and /cancel: background jobs, seen from the chat."""

from __future__ import annotations

from bot.chat.access import Access
from bot.chat.commands import Arg, Need, Right
from bot.flows.rollout.runner import ROLLOUT_KIND
from bot.jobs.runner import JobRunner
from handlers.plumbing.paging import Pager
from handlers.plumbing.registry import Call, command
from store import Job, Store

RECENT_JOBS = 100
STATE_MARKS = {
    "queued": "⏳",
    "running": "▶️",
    "succeeded": "✅",
    "failed": "❌",
    "cancelled": "🚫",
    "interrupted": "⏹",
}


def describe_job(job: Job) -> str:
    mark = STATE_MARKS.get(job.state, "")
    when = job.created_at[5:16].replace("T", " ")
    phase = f" at {job.phase}" if job.active and job.phase else ""
    result = f" — {job.result[:80]}" if job.result and not job.active else ""
    return f"{mark} #{job.id} {job.kind} {job.machine} ({when}) {job.state}{phase}{result}"


class JobCommands:
    """Background jobs, seen from the chat."""

    def __init__(self, *, store: Store, jobs: JobRunner, access: Access, pager: Pager) -> None:
        self.store = store
        self.pager = pager
        self.jobs = jobs
        self.access = access

    @command("jobs", "recent jobs")
    async def recent(self, call: Call) -> None:
        user_id = call.user.id
        mine = (
            None
            if self.access.is_admin(user_id)
            else {m.name for m in self.access.machines_for(user_id)}
        )
        jobs = await self.store.recent_jobs(RECENT_JOBS, machines=mine)
        if not jobs:
            await call.reply("No jobs yet.")
            return
        await self.pager.reply(call, [describe_job(j) for j in jobs], header="Recent jobs:")

    @command("log", "a job's log", arg=Arg.JOB, right=Right.MACHINE, needs=(Need.PRIVATE_CHAT,))
    async def log(self, call: Call) -> None:
        job = call.named_job
        events = await self.store.events(job.id)
        lines = [describe_job(job)] + [f"  {e.at[11:19]} {e.kind}: {e.text}" for e in events[-15:]]
        await call.reply("\n".join(lines))
        if not await self.jobs.send_log(job.id, call.chat_id, caption=f"job {job.id} log"):
            await call.reply("The full log is not available (never written, or removed).")

    @command("cancel", "stop a running job", arg=Arg.JOB, right=Right.MACHINE)
    async def cancel(self, call: Call) -> None:
        job = call.named_job
        if not job.active:
            await call.reply(f"Job {job.id} is not running ({job.state}).")
            return
        refused = self.jobs.cancel_refused(job.id)
        await self.store.audit(
            user_id=call.user.id,
            username=call.user.username or "",
            action="cancel",
            machine=job.machine,
            decision="refused" if refused else "allowed",
            detail=f"job {job.id}: {refused[:160]}" if refused else f"job {job.id}",
        )
        if refused:
            await call.reply(f"Job {job.id} goes on: {refused}.")
            return
        stopped = await self.jobs.cancel(job.id)
        if stopped and job.kind == ROLLOUT_KIND:
            await call.reply(
                f"Rollout {job.id}: no machine starts any more; those under way finish "
                "behind their rollback guards."
            )
        elif stopped:
            await call.reply(f"Job {job.id} cancelled; its processes were stopped.")
        else:
            await call.reply(f"Job {job.id} is not running in this bot process.")
