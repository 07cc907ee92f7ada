"""The TaskRun lifecycle, as ``TaskRunModel`` in the server drives it.

An attempt goes TASK_PENDING -> TASK_SCHEDULED (queued) -> TASK_RUNNING (claimed
by a PollTask stream; the timeout clock starts here) -> a result. The result is
applied only while the attempt is TASK_RUNNING: a second report, a report after
the attempt timed out, or a timeout after a report is ignored. TASK_FAILED and
TASK_TIMEOUT are retried while attempts remain (immediately, or after the
exponential backoff); TASK_EXCEPTION never is.
"""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import collections
import json
import time
from datetime import datetime, timedelta

from littlehorse.model import (
    LHErrorType,
    LHTaskError,
    ReportTaskRun,
    ScheduledTask,
    TaskAttempt,
    TaskStatus,
)

from fakes.littlehorse.core import FakeCore, now, to_millis
from fakes.littlehorse.records import Stream, TaskRunKey, TaskRunRecord, key_of
from fakes.littlehorse.values import incompatibility

#: ``TaskRunModel.isStillRunning``: a TaskRun in these statuses is not done.
STILL_RUNNING = frozenset(
    {TaskStatus.TASK_SCHEDULED, TaskStatus.TASK_RUNNING, TaskStatus.TASK_PENDING}
)


def backoff_delay_ms(policy, attempts_so_far: int) -> float:
    """``ExponentialBackoffRetryPolicyModel.calculateDelayForNextAttempt``.

    ``attempts_so_far`` is 1 for the first retry: base, base*multiplier, ... capped.
    """
    delay = int(policy.base_interval_ms * policy.multiplier ** (attempts_so_far - 1))
    return float(min(delay, policy.max_delay_ms))


class TaskRuns(FakeCore):
    """Creating, dispatching, claiming, finishing and retrying TaskAttempts."""

    def _enqueue(self, task: ScheduledTask) -> None:
        self._queues.setdefault(task.task_def_id.name, collections.deque()).append(task)
        self._cond.notify_all()

    def _dispatch(self, record: TaskRunRecord, total_observed: int | None = None) -> None:
        """``dispatchTaskToQueue``: the latest attempt becomes TASK_SCHEDULED and is queued."""
        attempt = record.latest
        attempt.status = TaskStatus.TASK_SCHEDULED
        attempt.schedule_time.FromDatetime(now())
        record.sync_status()
        run = record.run
        task = ScheduledTask(
            task_run_id=run.id,
            task_def_id=run.task_def_id,
            attempt_number=len(run.attempts) - 1,
            variables=run.input_variables,
            created_at=attempt.schedule_time,
            source=run.source,
            total_observed_checkpoints=(
                run.total_checkpoints if total_observed is None else total_observed
            ),
        )
        self._enqueue(task)

    def _attempt_of(
        self, task: ScheduledTask, status: TaskStatus
    ) -> tuple[TaskRunRecord, TaskAttempt] | None:
        """The TaskRun and attempt a ScheduledTask names, if that attempt is in ``status``."""
        record = self._task_runs.get(key_of(task.task_run_id))
        number = task.attempt_number
        if record is None or number >= len(record.run.attempts):
            return None
        attempt = record.run.attempts[number]
        return (record, attempt) if attempt.status == status else None

    def _claim(self, task: ScheduledTask, stream: Stream) -> None:
        """``TaskClaimEventModel`` + ``onTaskAttemptStarted``: the attempt starts running."""
        self.delivered[(task.task_run_id.task_guid, task.attempt_number)] = time.monotonic()
        found = self._attempt_of(task, TaskStatus.TASK_SCHEDULED)
        if found is None:
            return
        record, attempt = found
        attempt.status = TaskStatus.TASK_RUNNING
        attempt.start_time.FromDatetime(now())
        attempt.task_worker_id = stream.client_id
        attempt.task_worker_version = stream.worker_version
        record.indexed_status = TaskStatus.TASK_RUNNING
        record.sync_status()
        self._arm_timeout(record, task.attempt_number)
        self._task_run_changed(record)

    def _unclaim(self, task: ScheduledTask) -> None:
        """Undo a claim whose ScheduledTask never left the fake (its stream died first)."""
        found = self._attempt_of(task, TaskStatus.TASK_RUNNING)
        if found is None:
            return
        record, attempt = found
        attempt.status = TaskStatus.TASK_SCHEDULED
        for name in ("start_time", "task_worker_id", "task_worker_version"):
            attempt.ClearField(name)
        record.epochs[task.attempt_number] += 1  # its timeout timer must not fire
        record.indexed_status = TaskStatus.TASK_SCHEDULED
        record.sync_status()
        self._task_run_changed(record)

    def _arm_timeout(self, record: TaskRunRecord, number: int) -> None:
        """Schedule the TASK_TIMEOUT report the server sets up at claim and at each checkpoint.

        Every timer is kept (the server never cancels one), so a checkpoint does not
        push back the deadline set when the attempt was claimed.
        """
        if record.timeout_s is None:
            return
        key, epoch = record.key, record.epochs[number]
        deadline = now() + timedelta(seconds=record.timeout_s * self.time_scale)
        deadline = deadline.replace(microsecond=deadline.microsecond // 1000 * 1000)
        self._add_timer(record.timeout_s, lambda: self._timeout_fired(key, number, epoch, deadline))

    def _timeout_fired(self, key: TaskRunKey, number: int, epoch: int, deadline: datetime) -> None:
        record = self._task_runs.get(key)
        if record is None or number >= len(record.epochs) or record.epochs[number] != epoch:
            return
        self._time_out(record, number, deadline)

    def _time_out(self, record: TaskRunRecord, number: int, when: datetime) -> bool:
        report = ReportTaskRun(
            task_run_id=record.run.id,
            status=TaskStatus.TASK_TIMEOUT,
            attempt_number=number,
            total_checkpoints=record.run.total_checkpoints,
        )
        report.time.FromDatetime(when)
        return self._apply_result(record, report)

    def _apply_result(self, record: TaskRunRecord, report: ReportTaskRun) -> bool:
        """``onTaskAttemptResultReported``; False when the report was ignored."""
        run = record.run
        number = report.attempt_number
        if number >= len(run.attempts):
            return False  # the server rejects it; the worker's ReportTask still got OK
        attempt = run.attempts[number]
        if attempt.status != TaskStatus.TASK_RUNNING:
            return False  # already finished or timed out: late results are dropped
        return_type = self._return_type(run.task_def_id.name)
        if return_type is not None and return_type.masked:
            attempt.masked_value = True
        if report.HasField("time"):
            attempt.end_time.CopyFrom(report.time)
            to_millis(attempt.end_time)  # the server keeps a java.util.Date
        else:
            attempt.end_time.FromDatetime(now())
        if report.HasField("log_output"):
            attempt.log_output.CopyFrom(report.log_output)
        else:
            attempt.ClearField("log_output")
        serde_error = _output_error(report, return_type)
        if serde_error is not None:
            attempt.error.CopyFrom(LHTaskError(type=LHErrorType.VAR_SUB_ERROR, message=serde_error))
            attempt.status = TaskStatus.TASK_OUTPUT_SERDE_ERROR
            record.indexed_status = TaskStatus.TASK_OUTPUT_SERDE_ERROR
        else:
            case = report.WhichOneof("result")
            if case is not None:
                getattr(attempt, case).CopyFrom(getattr(report, case))
            attempt.status = report.status
            if report.status == TaskStatus.TASK_SUCCESS:
                record.indexed_status = TaskStatus.TASK_SUCCESS
            elif self._should_retry(record):
                self._schedule_retry(record)
            else:
                record.indexed_status = report.status
        record.sync_status()
        self._task_run_changed(record)
        return True

    def _return_type(self, task_def_name: str):
        task_def = self._task_def(task_def_name)
        if task_def is None or not task_def.HasField("return_type"):
            return None
        if not task_def.return_type.HasField("return_type"):
            return None
        return task_def.return_type.return_type

    @staticmethod
    def _should_retry(record: TaskRunRecord) -> bool:
        """Only TASK_FAILED and TASK_TIMEOUT retry, while ``total_attempts`` allows."""
        if record.latest.status not in (TaskStatus.TASK_FAILED, TaskStatus.TASK_TIMEOUT):
            return False
        return record.run.total_attempts > len(record.run.attempts)

    def _schedule_retry(self, record: TaskRunRecord) -> None:
        """A new TASK_PENDING attempt, queued now or when the backoff delay is over."""
        run = record.run
        if not run.HasField("exponential_backoff"):
            record.add_attempt(TaskAttempt(status=TaskStatus.TASK_PENDING))
            self._dispatch(record)
            return
        delay_ms = backoff_delay_ms(run.exponential_backoff, len(run.attempts))
        record.add_attempt(TaskAttempt(status=TaskStatus.TASK_PENDING))
        key, number = record.key, len(run.attempts) - 1
        self._add_timer(delay_ms / 1000, lambda: self._retry_ready(key, number))

    def _retry_ready(self, key: TaskRunKey, number: int) -> None:
        """``TaskAttemptRetryReadyModel``: the backoff is over, queue the pending attempt."""
        record = self._task_runs.get(key)
        if record is None or len(record.run.attempts) - 1 != number:
            return
        if record.latest.status != TaskStatus.TASK_PENDING:
            return
        self._dispatch(record)
        self._task_run_changed(record)


def _output_error(report: ReportTaskRun, return_type) -> str | None:
    """Why a reported output is a TASK_OUTPUT_SERDE_ERROR, or None."""
    if not report.HasField("output"):
        return None
    output = report.output
    case = output.WhichOneof("value")
    if case in ("json_obj", "json_arr"):
        expected = dict if case == "json_obj" else list
        try:
            parsed = json.loads(getattr(output, case))
        except ValueError:
            parsed = None
        if not isinstance(parsed, expected):
            return (
                "Error deserializing JSON Obj"
                if case == "json_obj"
                else "Error deserializing JSON Arr"
            )
    if report.status == TaskStatus.TASK_SUCCESS and return_type is not None:
        problem = incompatibility(return_type, output)
        if problem is not None:
            return f"Task output incompatible with declared return type: {problem}"
    return None
