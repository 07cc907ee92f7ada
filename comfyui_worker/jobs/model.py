"""A job is a WfRun of ``comfyui-generate``: typed views the CLI and the page share.

LittleHorse holds all of a job's state, so there is no database of our own: the
WfRun (status, times), its variables (the input ``workflow``, the ``result``,
``retry_of``), its NodeRuns (the failure the WfRun ended with) and the TaskRun
(each attempt's worker, times, trail and error). ``jobs/read.py`` turns those protos
into these models once; everything else reads the models.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer

from comfyui_worker.errors import ExecutionInterruptedError, ExitCode, all_errors
from comfyui_worker.result import ReportedResult, SavedOutput


class JobStatus(StrEnum):
    """Where a job is, in the words of a queue rather than of LittleHorse."""

    QUEUED = "queued"  # no worker has its current attempt yet (or a retry waits its backoff)
    WAITING = "waiting"  # a worker claimed it; no prompt in ComfyUI yet (waiting for the GPU)
    RUNNING = "running"  # its prompt is in ComfyUI (the attempt recorded its submission)
    CANCELLING = "cancelling"  # stopped; the running attempt has not reported back yet
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"


ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.WAITING, JobStatus.RUNNING, JobStatus.CANCELLING})
FINISHED = frozenset({JobStatus.CANCELLED, JobStatus.COMPLETED, JobStatus.FAILED})

#: What ``jobs --status WORD`` lists: one status, or a group (LittleHorse's words too).
STATUS_FILTERS: dict[str, frozenset[JobStatus]] = {
    "active": ACTIVE,
    "queued": frozenset({JobStatus.QUEUED}),
    "waiting": frozenset({JobStatus.WAITING}),
    "running": frozenset({JobStatus.RUNNING}),
    "cancelling": frozenset({JobStatus.CANCELLING}),
    "cancelled": frozenset({JobStatus.CANCELLED}),
    "halted": frozenset({JobStatus.CANCELLING, JobStatus.CANCELLED}),
    "completed": frozenset({JobStatus.COMPLETED}),
    "failed": frozenset({JobStatus.FAILED}),
    "error": frozenset({JobStatus.FAILED}),
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttemptError(_Model):
    """How one attempt failed: the error's name and message (shown as ``name: message``)."""

    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name

    @model_serializer
    def _as_line(self) -> str:
        """JSON (``jobs show --json``, the page) shows the one line."""
        return str(self)


class Attempt(_Model):
    """One TaskAttempt: who ran it, when, its trail, and how it ended."""

    number: int  # LittleHorse's attempt number, from 0
    status: str  # TASK_SCHEDULED, TASK_RUNNING, TASK_SUCCESS, TASK_FAILED, ...
    worker: str | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    log: str = ""
    error: AttemptError | None = None


class JobError(_Model):
    """Why a job failed or stopped, with the node ComfyUI named when one raised."""

    name: str
    message: str
    node_id: str | None = None
    node_type: str | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    last_attempt: AttemptError | None = None  # the attempt's error behind task-failed/-timeout

    def one_line(self) -> str:
        """``name: message`` plus the node, on one line (for lists and progress)."""
        text = f"{self.name}: {self.message}"
        if self.last_attempt:
            text += f" (last attempt: {self.last_attempt})"
        return " ".join(text.split())

    @property
    def exit_code(self) -> ExitCode:
        """``main.py``'s exit code for this failure: the error class's own."""
        classes = {cls.name: cls for cls in all_errors()}
        for name in (self.name, self.last_attempt.name if self.last_attempt else ""):
            if name in classes:
                return classes[name].exit_code
        return ExitCode.TECHNICAL


class JobInput(_Model):
    """What a job was submitted with: its WfSpec, its task input, the job it retries."""

    wf_spec: str
    task_input: dict[str, Any]
    retry_of: str | None = None


class Job(_Model):
    """A WfRun of a comfyui-generate WfSpec, as one record of a job queue."""

    id: str
    wf_spec: str
    lane: str
    status: JobStatus
    lh_status: str  # the WfRun's own status (a cancelled job's WfRun stays RUNNING)
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    queued_s: float
    run_s: float | None = None
    total_s: float
    template: str | None = None
    params: dict[str, Any] = {}
    overrides: dict[str, Any] = {}  # node_id.input -> value the job set directly
    input: dict[str, Any] = {}  # the task input, with image bytes elided
    result: ReportedResult | None = None
    outputs: list[SavedOutput] = []
    error: JobError | None = None
    retry_of: str | None = None
    max_attempts: int = 1
    attempts: list[Attempt] = []

    @property
    def exit_code(self) -> ExitCode:
        """What ``submit --wait`` exits with: 0, or the failure's own code."""
        if self.status == JobStatus.COMPLETED:
            return ExitCode.OK
        if self.status == JobStatus.CANCELLED:
            return ExecutionInterruptedError.exit_code
        return self.error.exit_code if self.error else ExitCode.TECHNICAL

    def detail(self, retries: list[str]) -> dict[str, Any]:
        """The job in full, with the ids of its retries: ``jobs show --json`` and the page."""
        return {**self.model_dump(mode="json"), "retries": retries}

    def summary(self) -> dict[str, Any]:
        """The JSON a list shows: no input, result or trails."""
        return self.model_dump(mode="json", exclude={"input", "result", "attempts"})
