"""/jobs, /log and /cancel: background jobs, seen from the chat."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.chat.commands import CommandError, parse_command
from bot.flows.services import Services
from handlers.common import sender
from store import Job

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


class JobHandlers:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def jobs(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = sender(update)
        mine = (
            None
            if self.s.access.is_admin(user.id)
            else {m.name for m in self.s.access.machines_for(user.id)}
        )
        jobs = await self.s.store.recent_jobs(10, machines=mine)
        if not jobs:
            await message.reply_text("No jobs yet.")
            return
        await message.reply_text("Recent jobs:\n" + "\n".join(describe_job(j) for j in jobs))

    async def _job_for(self, update: Update) -> Job | None:
        """The job named in the command, if the user may see it; answers otherwise."""
        message, user = sender(update)
        try:
            job_id = parse_command(message.text or "").job_id
        except CommandError as exc:
            await message.reply_text(str(exc))
            return None
        job = await self.s.store.job(job_id) if job_id is not None else None
        if job is None or not self.s.access.may_act(user.id, job.machine):
            await self.s.store.audit(
                user_id=user.id,
                username=user.username or "",
                action=f"/{(message.text or '').split()[0][1:12]}",
                decision="refused",
                detail=f"job {job_id} unknown or not yours",
            )
            await message.reply_text(f"No job {job_id} of yours. /jobs lists them.")
            return None
        return job

    async def log(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, _ = sender(update)
        job = await self._job_for(update)
        if job is None:
            return
        events = await self.s.store.events(job.id)
        lines = [describe_job(job)] + [f"  {e.at[11:19]} {e.kind}: {e.text}" for e in events[-15:]]
        await message.reply_text("\n".join(lines))
        if not await self.s.jobs.send_log(job.id, message.chat.id, caption=f"job {job.id} log"):
            await message.reply_text("The full log is not available (never written, or removed).")

    async def cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = sender(update)
        job = await self._job_for(update)
        if job is None:
            return
        if not job.active:
            await message.reply_text(f"Job {job.id} is not running ({job.state}).")
            return
        await self.s.store.audit(
            user_id=user.id,
            username=user.username or "",
            action="cancel",
            machine=job.machine,
            decision="allowed",
            detail=f"job {job.id}",
        )
        stopped = await self.s.jobs.cancel(job.id)
        if stopped:
            await message.reply_text(f"Job {job.id} cancelled; its processes were stopped.")
        else:
            await message.reply_text(f"Job {job.id} is not running in this bot process.")


def register(application: Application, services: Services) -> None:  # type: ignore[type-arg]
    h = JobHandlers(services)
    for name, callback in (("jobs", h.jobs), ("log", h.log), ("cancel", h.cancel)):
        application.add_handler(CommandHandler(name, callback))
        services.commands.add(name)
