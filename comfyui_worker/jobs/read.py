"""Build a ``Job`` from what LittleHorse returns for one WfRun.

A stopped WfRun stays RUNNING while its task runs (and after: only its entrypoint
ThreadRun halts), so a cancelled job is told by the ThreadRun's MANUAL_HALT, not by
the WfRun's status. The failure a WfRun ended with is its failure handler's (e.g.
``task-failed``); the node's own failure (the TaskRun's exception content) carries
the ComfyUI node that raised.
"""

# protobuf's generated classes type their fields but not their methods (HasField...).
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from littlehorse.model import (
    Failure,
    LHStatus,
    NodeRun,
    TaskAttempt,
    TaskRun,
    TaskStatus,
    Variable,
    WfRun,
)

from comfyui_worker.jobs.model import ACTIVE, Attempt, AttemptError, Job, JobError, JobStatus
from comfyui_worker.lh.lanes import lane_of
from comfyui_worker.lh.wfspec import RESULT_VAR, RETRY_OF_VAR, WORKFLOW_VAR
from comfyui_worker.result import ReportedResult

TERMINAL = {
    LHStatus.COMPLETED: JobStatus.COMPLETED,
    LHStatus.EXCEPTION: JobStatus.FAILED,
    LHStatus.ERROR: JobStatus.FAILED,
}
# the failure names LittleHorse gives a task node that failed technically (retries spent)
TECHNICAL_FAILURE_NAMES = ("TASK_FAILURE", "TIMEOUT")
PENDING = (TaskStatus.TASK_PENDING, TaskStatus.TASK_SCHEDULED)


def entry_values(variables: Iterable[Variable]) -> dict[str, Any]:
    """The WfRun's variables of its entrypoint thread, by name, as Python values."""
    return {v.id.name: value_of(v.value) for v in variables if v.id.thread_run_number == 0}


def build_job(
    wf_run: WfRun,
    node_runs: Iterable[NodeRun],
    variables: Iterable[Variable],
    task_runs: Iterable[TaskRun],
    now: datetime | None = None,
    submitted_at: datetime | None = None,
) -> Job:
    """One job from its WfRun, NodeRuns, Variables and TaskRuns.

    ``submitted_at`` is when the running attempt's prompt began to run, as its
    checkpoints tell (``prompt_mark``): before that it is waiting for the GPU, and its
    run counts from then.
    """
    now = now or datetime.now(UTC)
    values = entry_values(variables)
    task_run = next(iter(sorted(task_runs, key=lambda t: t.id.task_guid)), None)
    attempts = [_attempt(n, a) for n, a in enumerate(task_run.attempts)] if task_run else []
    status = _status(wf_run, task_run)
    if status == JobStatus.RUNNING and submitted_at is None:
        status = JobStatus.WAITING
    created = _time(wf_run, "start_time") or now
    started = next((a.started_at for a in attempts if a.started_at), None)
    if status == JobStatus.RUNNING and len(attempts) == 1:
        started = submitted_at  # queued until its prompt, not until its claim
    ended = _ended(wf_run, status, attempts)
    workflow = values.get(WORKFLOW_VAR)
    result = ReportedResult.read(values.get(RESULT_VAR))
    ran = _ran_s(status, attempts, submitted_at, result, ended or now)
    template, params = _template_and_params(workflow, result)
    return Job(
        id=wf_run.id.id,
        wf_spec=wf_run.wf_spec_id.name,
        lane=lane_of(wf_run.wf_spec_id.name),
        status=status,
        lh_status=_enum_name(LHStatus, wf_run.status),
        created_at=created,
        started_at=started,
        ended_at=ended,
        queued_s=_seconds(created, started or ended or now),
        run_s=ran,
        total_s=_seconds(created, ended or now),
        template=template,
        params=params,
        overrides=_overrides(workflow, result),
        input=elide_images(workflow) if isinstance(workflow, dict) else {},
        result=result,
        outputs=result.outputs if result is not None else [],
        error=_error(status, list(node_runs), attempts),
        retry_of=values.get(RETRY_OF_VAR) if isinstance(values.get(RETRY_OF_VAR), str) else None,
        max_attempts=task_run.total_attempts if task_run else 1,
        attempts=attempts,
    )


def submission_attempt(value: object) -> int | None:
    """The attempt a checkpoint's submission record names (``run/fencing.Submission``)."""
    if isinstance(value, dict) and isinstance(value.get("attempt"), int):
        return int(value["attempt"])
    return None


def prompt_mark(value: object, attempt: int) -> Literal["running", "waiting"] | None:
    """What one checkpoint says of ``attempt``'s prompt; None if it is not about it.

    ``running`` from this record on; ``waiting``: queued behind the worker's own
    prompts, not started yet. The worker records a submission before its POST
    (``run/fencing.Submission``); a prefetched one names ``queued_behind`` and is
    running only from its later ``started`` record (``run/fencing.Started``), so
    checkpoints are read newest first.
    """
    if submission_attempt(value) != attempt or not isinstance(value, dict):
        return None
    if value.get("record") == "started":
        return "running"
    behind = value.get("queued_behind")
    return "waiting" if isinstance(behind, int) and behind > 0 else "running"


def value_of(value: Any) -> Any:
    """A VariableValue as Python: JSON parsed (kept as text if it does not parse)."""
    kind = value.WhichOneof("value")
    if kind in ("json_obj", "json_arr"):
        text = getattr(value, kind)
        try:
            return json.loads(text)
        except ValueError:
            return text
    return None if kind is None else getattr(value, kind)


def elide_images(task_input: dict[str, Any]) -> dict[str, Any]:
    """The input with each image's base64 replaced by its size: safe to print and send."""
    images = task_input.get("images")
    if not isinstance(images, list):
        return task_input
    shown = [
        {**image, "base64": f"<{len(image['base64'])} base64 characters>"}
        if isinstance(image, dict) and isinstance(image.get("base64"), str)
        else image
        for image in images
    ]
    return {**task_input, "images": shown}


def _status(wf_run: WfRun, task_run: TaskRun | None) -> JobStatus:
    if wf_run.status in TERMINAL:
        return TERMINAL[wf_run.status]
    entry = wf_run.thread_runs[0] if wf_run.thread_runs else None
    stopped = entry is not None and any(
        reason.WhichOneof("reason") == "manual_halt" for reason in entry.halt_reasons
    )
    if stopped or wf_run.status == LHStatus.HALTED:
        halted = wf_run.status == LHStatus.HALTED or (entry and entry.status == LHStatus.HALTED)
        return JobStatus.CANCELLED if halted else JobStatus.CANCELLING
    if task_run is None or not task_run.attempts or task_run.attempts[-1].status in PENDING:
        return JobStatus.QUEUED
    return JobStatus.RUNNING


def _ran_s(
    status: JobStatus,
    attempts: list[Attempt],
    submitted_at: datetime | None,
    result: ReportedResult | None,
    until: datetime,
) -> float | None:
    """How long the last attempt ran: from its prompt, never from the first attempt's claim.

    Running: since the current attempt recorded its prompt. Finished with a result: the
    worker's own execution and download time. Otherwise the last attempt's span.
    """
    if status == JobStatus.WAITING:
        return None
    if status in ACTIVE:
        return _seconds(submitted_at, until) if submitted_at else None
    if result is not None and result.ran_s is not None:
        return result.ran_s
    last = attempts[-1] if attempts else None
    if last is None or last.started_at is None:
        return None
    return _seconds(last.started_at, last.ended_at or until)


def _attempt(number: int, attempt: TaskAttempt) -> Attempt:
    return Attempt(
        number=number,
        status=_enum_name(TaskStatus, attempt.status),
        worker=attempt.task_worker_id or None,
        scheduled_at=_time(attempt, "schedule_time"),
        started_at=_time(attempt, "start_time"),
        ended_at=_time(attempt, "end_time"),
        log=str(value_of(attempt.log_output) or "") if attempt.HasField("log_output") else "",
        error=_attempt_error(attempt),
    )


def _attempt_error(attempt: TaskAttempt) -> AttemptError | None:
    if attempt.HasField("exception"):
        return AttemptError(name=attempt.exception.name, message=attempt.exception.message)
    if attempt.HasField("error"):
        return _reported_error(attempt.error.message)
    if attempt.status == TaskStatus.TASK_TIMEOUT:
        return AttemptError(name="task-timeout", message="the attempt timed out")
    return None


def _reported_error(message: str) -> AttemptError:
    """A TASK_FAILED message, which is text only, read once into ``name`` and ``message``.

    Workers report their error's own ``<name>: <message>`` line; a bare SDK traceback
    (older workers, a crash in the SDK) ends with ``module.Class: <name>: <message>``,
    which is what is kept.
    """
    text = message.strip()
    if text.startswith("Traceback (most recent call last)"):
        last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
        head, sep, rest = last.partition(": ")
        text = rest.strip() if sep and "." in head and " " not in head else last.strip()
    name, sep, rest = text.partition(": ")
    if not sep or " " in name:
        return AttemptError(name="task-failed", message=text or "task failed")
    return AttemptError(name=name, message=rest)


def _ended(wf_run: WfRun, status: JobStatus, attempts: list[Attempt]) -> datetime | None:
    if status in (JobStatus.COMPLETED, JobStatus.FAILED):
        return _time(wf_run, "end_time") or (attempts[-1].ended_at if attempts else None)
    if status == JobStatus.CANCELLED:
        return attempts[-1].ended_at if attempts else None
    return None


def _error(status: JobStatus, node_runs: list[NodeRun], attempts: list[Attempt]) -> JobError | None:
    """The failure: the handler's name, the node's details, the last attempt's error."""
    if status == JobStatus.CANCELLED:
        last = attempts[-1].error if attempts else None
        if last is None:
            return JobError(name="cancelled", message="the job was stopped")
        return JobError(name=last.name, message=last.message)
    if status != JobStatus.FAILED:
        return None
    task = _last_failure(n for n in node_runs if n.id.thread_run_number == 0)
    handler = _last_failure(n for n in node_runs if n.id.thread_run_number != 0)
    if task is None and handler is None:
        return JobError(name="failed", message="the WfRun failed without a recorded failure")
    content = value_of(task.content) if task is not None and task.HasField("content") else None
    details = content if isinstance(content, dict) else {}
    technical = task is None or task.failure_name in TECHNICAL_FAILURE_NAMES
    chosen = handler if handler is not None else task
    assert chosen is not None
    return JobError(
        name=chosen.failure_name,
        message=chosen.message if technical or task is None else task.message,
        node_id=_text(details.get("node_id")),
        node_type=_text(details.get("node_type")),
        exception_type=_text(details.get("exception_type")),
        exception_message=_text(details.get("exception_message")),
        last_attempt=attempts[-1].error if technical and attempts else None,
    )


def _last_failure(node_runs: Iterable[NodeRun]) -> Failure | None:
    failures = [f for n in sorted(node_runs, key=lambda n: n.id.position) for f in n.failures]
    return failures[-1] if failures else None


def _template_and_params(
    workflow: Any, result: ReportedResult | None
) -> tuple[str | None, dict[str, Any]]:
    """The template and parameters: the result's (defaults filled in), else the input's."""
    source = workflow if isinstance(workflow, dict) else {}
    template = source.get("template") if isinstance(source.get("template"), str) else None
    params = source.get("params") if isinstance(source.get("params"), dict) else {}
    if result is not None:
        template = result.template or template
        params = result.params if result.params is not None else params
    return template, dict(params or {})


def _overrides(workflow: Any, result: ReportedResult | None) -> dict[str, Any]:
    """The overrides the run recorded, else those of its input."""
    if result is not None and result.overrides is not None:
        return result.overrides
    source = workflow if isinstance(workflow, dict) else {}
    given = source.get("overrides")
    return dict(given) if isinstance(given, dict) else {}


def _time(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    return stamp


def _seconds(start: datetime | None, end: datetime) -> float:
    return 0.0 if start is None else max(0.0, round((end - start).total_seconds(), 3))


def _enum_name(enum: Any, value: int) -> str:
    return str(enum.Name(value))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
