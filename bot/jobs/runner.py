"""Background jobs: one per machine, a global limit, persisted, cancellable, logged.

A job is a coroutine run as an asyncio task. Its ``JobContext`` (``bot.jobs.context``) is
the only thing it touches: phases and output go to the job log, the store and the progress
message; a failure is a ``JobFailed`` naming the phase and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from bot.chat.port import ChatPort
from bot.core.durations import format_duration
from bot.core.files import private_dir
from bot.jobs.context import JobCancelled, JobContext, JobFailed, JobWork
from bot.jobs.joblog import JobLog, read_for_sending
from bot.jobs.progress import Progress, ProgressState
from store import Job, JobConflict, Store, utcnow
from store.database import StoreUnavailable

log = logging.getLogger(__name__)
#: Jobs running at once across machines, unless the bot's tuning says otherwise.
DEFAULT_MAX_PARALLEL = 4
#: How long a stopping bot waits for jobs still saying how they ended.
ENDING_GRACE = 30.0
#: The pauses between a finished job's tries to record its result in a locked database.
STORE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def busy_text(name: str, conflict: JobConflict) -> str:
    """What to tell someone whose job could not start because ``name`` has one already."""
    running = conflict.job
    at = f", at {running.phase}" if running.phase else ""
    return (
        f"{name} already has job {running.id} ({running.kind}, {running.state}{at}). "
        f"/log {running.id} shows it; /cancel {running.id} stops it."
    )


class JobRunner:
    """Starts, tracks and cancels jobs; persists every state change."""

    def __init__(
        self,
        store: Store,
        chat: ChatPort,
        state_dir: Path,
        *,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
        progress_interval: float = 3.0,
    ) -> None:
        self.store = store
        self.chat = chat
        private_dir(state_dir)
        self.log_dir = private_dir(state_dir / "jobs")
        self.progress_interval = progress_interval
        self._slots = asyncio.Semaphore(max_parallel)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # Jobs saying how they ended: shutdown waits for them before the store closes.
        self._endings: set[asyncio.Future[None]] = set()
        self._contexts: dict[int, JobContext] = {}
        self._stopping = False

    async def start(
        self,
        *,
        kind: str,
        title: str,
        machine: str,
        user_id: int | None,
        chat_id: int | None,
        phases: Sequence[str],
        work: JobWork,
    ) -> Job:
        """Create the job (JobConflict if the machine is busy) and run ``work`` as a task."""
        job = await self.store.create_job(
            kind=kind, machine=machine, user_id=user_id, chat_id=chat_id
        )
        log_path = self.log_dir / f"{job.id}.log"
        job = await self.store.update_job(job.id, log_path=str(log_path))
        progress = Progress(
            self.chat,
            chat_id,
            ProgressState(title=f"{title} (job {job.id})", phases=list(phases)),
            self.progress_interval,
        )
        context = JobContext(job, self.store, self.chat, JobLog(log_path), progress)
        task = asyncio.create_task(self._run(context, work), name=f"job-{job.id}")
        self._tasks[job.id] = task
        self._contexts[job.id] = context
        return job

    async def run_child(
        self, job: Job, *, title: str, phases: Sequence[str], work: JobWork
    ) -> tuple[str, str]:
        """Run ``work`` for a job a running job created (``Store.create_jobs``): its own log
        and store row, no progress message of its own and no slot (its parent holds one).
        Returns its final state and result; a cancellation is recorded, then goes on up."""
        log_path = self.log_dir / f"{job.id}.log"
        job = await self.store.update_job(
            job.id, log_path=str(log_path), state="running", started_at=utcnow()
        )
        progress = Progress(self.chat, None, ProgressState(title=title, phases=list(phases)))
        ctx = JobContext(job, self.store, self.chat, JobLog(log_path), progress)
        await progress.start()
        state, result = "failed", "failed"
        try:
            outcome = await work(ctx)
            state, result = "succeeded", outcome.summary
        except JobFailed as exc:
            where = f" at {exc.phase}" if exc.phase else (f" at {ctx.phase}" if ctx.phase else "")
            result = f"failed{where}: {exc.reason}"
        except JobCancelled as exc:
            state, result = "cancelled", str(exc) or "cancelled"
        except asyncio.CancelledError:
            state = "interrupted" if self._stopping else "cancelled"
            result = "interrupted: the bot stopped" if self._stopping else "cancelled"
            raise
        except Exception as exc:  # a bug must end the job visibly, not silently
            log.exception("job %s crashed", job.id)
            result = f"failed at {ctx.phase or 'start'}: internal error ({type(exc).__name__})"
        finally:
            text = ctx.log.clean(result)
            ctx.log.write(f"=== {state}: {text}")
            ctx.log.close()
            await asyncio.shield(progress.finish(text, outcome=state))
            await asyncio.shield(self._record_end(job, state, text[:500]))
        return state, text

    async def end_unstarted(self, job: Job, state: str, result: str) -> None:
        """End a job a running job created but never ran (a rollout's machine not touched)."""
        await self._record_end(job, state, result[:500])

    async def _run(self, ctx: JobContext, work: JobWork) -> None:
        job = ctx.job
        try:
            ref = await ctx.progress.start()
            if ref is not None:
                shown = ref.message_id
                await ctx.bookkeep(self.store.update_job(job.id, progress_message_id=shown))
            async with self._slots:
                await ctx.bookkeep(
                    self.store.update_job(job.id, state="running", started_at=utcnow())
                )
                await ctx.bookkeep(self.store.add_event(job.id, "state", "running"))
                outcome = await work(ctx)
            await self._end(ctx, "succeeded", outcome.summary)
        except JobFailed as exc:
            where = f" at {exc.phase}" if exc.phase else (f" at {ctx.phase}" if ctx.phase else "")
            await self._end(ctx, "failed", f"failed{where}: {exc.reason}")
        except JobCancelled as exc:
            await self._end(ctx, "cancelled", str(exc) or "cancelled")
        except StoreUnavailable as exc:
            log.warning("job %s stopped: the database is unavailable: %s", job.id, exc)
            await self._end(
                ctx,
                "failed",
                f"failed at {ctx.phase or 'start'}: the database is unavailable ({exc}), "
                "so the job stopped before doing anything it could not record",
            )
        except asyncio.CancelledError:
            if self._stopping:
                await asyncio.shield(self._end(ctx, "interrupted", "interrupted: the bot stopped"))
            else:
                await asyncio.shield(self._end(ctx, "cancelled", "cancelled"))
        except Exception as exc:  # a bug must end the job visibly, not silently
            log.exception("job %s crashed", job.id)
            await self._end(
                ctx,
                "failed",
                f"failed at {ctx.phase or 'start'}: internal error ({type(exc).__name__})",
            )
        finally:
            if ctx.ending is not None and not ctx.ending.done():
                # Cancelled while ending from an except clause: let the ending finish.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(ctx.ending)
            self._tasks.pop(job.id, None)
            self._contexts.pop(job.id, None)

    async def _end(self, ctx: JobContext, state: str, result: str) -> None:
        """End the job once: the first verdict wins and runs to completion, shielded."""
        if ctx.ending is None:
            ctx.ending = asyncio.ensure_future(self._finish(ctx, state, result))
            self._endings.add(ctx.ending)
            ctx.ending.add_done_callback(self._endings.discard)
        await asyncio.shield(ctx.ending)

    async def _finish(self, ctx: JobContext, state: str, result: str) -> None:
        job = ctx.job
        took = format_duration(time.monotonic() - ctx.started)
        text = ctx.log.clean(result)
        ctx.log.write(f"=== {state}: {text} ({took})")
        if ctx.log.write_error:
            text += f"\n⚠️ {ctx.log.write_error}"
        ctx.log.close()
        mark = {"succeeded": "✅", "failed": "❌", "cancelled": "🚫", "interrupted": "⏹"}.get(
            state, ""
        )
        await ctx.progress.finish(f"{mark} {text}", outcome=state)
        await self._record_end(job, state, text[:500])
        if state == "failed" and job.chat_id is not None:
            if ctx.log.write_error:
                await self._send_tail(ctx, job.chat_id)
            else:
                await self.send_log(job.id, job.chat_id, caption=f"job {job.id} log")

    async def _send_tail(self, ctx: JobContext, chat_id: int) -> None:
        """The log file is incomplete (full disk): send the redacted lines kept in memory."""
        tail = list(ctx.log.tail)
        await self.chat.send_file(
            chat_id,
            f"job-{ctx.job.id}-{ctx.job.machine}-tail.log",
            ("\n".join(tail) + "\n").encode(),
            caption=f"job {ctx.job.id}: its last {len(tail)} lines (the log file is incomplete)",
        )

    async def _record_end(self, job: Job, state: str, result: str) -> None:
        """Store the final state, waiting out a locked database; say so while it lasts."""
        for delay in (*STORE_RETRY_DELAYS, None):
            try:
                await self.store.update_job(
                    job.id, state=state, finished_at=utcnow(), result=result
                )
                await self.store.add_event(job.id, "state", state)
                return
            except StoreUnavailable as exc:
                if delay is None:
                    log.error("job %s: its result was never recorded: %s", job.id, exc)
                    await self._tell(
                        job,
                        f"⚠️ Job {job.id}'s result could not be saved ({exc}); after a restart "
                        "it will show as interrupted.",
                    )
                    return
                if delay == STORE_RETRY_DELAYS[0]:
                    log.warning("job %s: waiting to record its result: %s", job.id, exc)
                    await self._tell(
                        job,
                        f"⚠️ Job {job.id} ended, but the database is unavailable ({exc}); "
                        "I keep trying to record it.",
                    )
                await asyncio.sleep(delay)

    async def _tell(self, job: Job, text: str) -> None:
        if job.chat_id is not None:
            await self.chat.post(job.chat_id, text)

    async def send_log(self, job_id: int, chat_id: int, *, caption: str) -> bool:
        job = await self.store.job(job_id)
        if job is None or not job.log_path:
            return False
        data = await asyncio.to_thread(read_for_sending, Path(job.log_path))
        if data is None:
            return False
        return await self.chat.send_file(
            chat_id, f"job-{job_id}-{job.machine}.log", data, caption=caption
        )

    def cancel_refused(self, job_id: int) -> str | None:
        """Why cancelling the job now would not stop what it started, or None."""
        context = self._contexts.get(job_id)
        return context.cancel_refused if context is not None else None

    async def cancel(self, job_id: int) -> bool:
        """Cancel a running job; its work's cleanup (killing processes, removing files) runs."""
        task = self._tasks.get(job_id)
        if task is None:
            return False
        context = self._contexts.get(job_id)
        if context is not None and context.on_cancel is not None and not self._stopping:
            context.on_cancel()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
        return True

    async def shutdown(self) -> None:
        """On stop: every job ends as ``interrupted``, its cleanup done; none restarts by itself."""
        self._stopping = True
        for job_id in list(self._tasks):
            await self.cancel(job_id)
        if self._endings:
            await asyncio.wait(set(self._endings), timeout=ENDING_GRACE)
