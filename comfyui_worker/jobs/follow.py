"""Follow a job to its end, saying what changed: attempts starting, failing, retrying.

LittleHorse has no push for a WfRun's progress that this project's WfSpec emits, so
``follow`` reads the job every ``interval_s`` and reports the difference between two
reads as short lines (``submit --wait`` prints them on stderr).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from comfyui_worker.jobs.client import Jobs
from comfyui_worker.jobs.model import FINISHED, Attempt, Job, JobStatus

INTERVAL_S = 0.5


def follow(
    jobs: Jobs, job_id: str, report: Callable[[str], None], interval_s: float = INTERVAL_S
) -> Job:
    """Read the job until it is finished, reporting each change; return the last read."""
    previous: Job | None = None
    while True:
        job = jobs.get(job_id)
        for line in changes(previous, job):
            report(line)
        if job.status in FINISHED:
            return job
        previous = job
        time.sleep(interval_s)  # the next read of LittleHorse, not a wait in a test


def changes(before: Job | None, after: Job) -> list[str]:
    """What happened between two reads of a job, one line per event."""
    seen = {a.number: a.status for a in before.attempts} if before else {}
    lines = []
    for attempt in after.attempts:
        was = seen.get(attempt.number)
        if was == attempt.status:
            continue
        if _started_unseen(was, attempt):  # it ran between two reads: say where, too
            lines.append(describe(attempt.model_copy(update={"status": "TASK_RUNNING"}), after))
        lines.append(describe(attempt, after))
    moved = before is None or before.status != after.status
    if moved and after.status not in (JobStatus.QUEUED, JobStatus.WAITING, JobStatus.RUNNING):
        lines.append(outcome(after))
    return [line for line in lines if line]


def _started_unseen(was: str | None, attempt: Attempt) -> bool:
    """An attempt that ended before any read saw it running (a task shorter than a poll)."""
    not_yet = (None, "TASK_PENDING", "TASK_SCHEDULED")
    return (
        was in not_yet and attempt.status not in (*not_yet, "TASK_RUNNING") and bool(attempt.worker)
    )


def describe(attempt: Attempt, job: Job) -> str:
    """One attempt's state as a line: queued, started, finished, failed (and retried)."""
    name = f"attempt {attempt.number + 1}/{job.max_attempts}"
    status = attempt.status
    if status == "TASK_PENDING":
        return f"{name}: waiting for its retry backoff" if attempt.number else ""
    if status == "TASK_SCHEDULED":
        return f"{name}: queued, waiting for a worker"
    if status == "TASK_RUNNING":
        return f"{name}: started on worker {attempt.worker or '?'}"
    if status == "TASK_SUCCESS":
        return f"{name}: finished in {_took(attempt)}"
    again = status in ("TASK_FAILED", "TASK_TIMEOUT") and attempt.number + 1 < job.max_attempts
    retried = " (will be retried)" if again else ""
    return f"{name}: failed{retried} after {_took(attempt)}: {attempt.error or status}"


def outcome(job: Job) -> str:
    """The job's end (or its cancelling) as a line."""
    if job.status == JobStatus.COMPLETED:
        return f"job {job.id} completed in {job.total_s:.1f} s: {len(job.outputs)} output(s)"
    if job.status == JobStatus.CANCELLING:
        return f"job {job.id} is being cancelled: waiting for its worker to stop the prompt"
    if job.status == JobStatus.CANCELLED:
        return f"job {job.id} cancelled"
    detail = job.error.one_line() if job.error else job.lh_status
    return f"job {job.id} failed: {detail}"


def _took(attempt: Attempt) -> str:
    if attempt.started_at is None or attempt.ended_at is None:
        return "?"
    return f"{(attempt.ended_at - attempt.started_at).total_seconds():.1f} s"
