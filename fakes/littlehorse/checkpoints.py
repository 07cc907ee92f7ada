"""PutCheckpoint / GetCheckpoint with the server's fencing rule (``PutCheckpointRequestModel``).

* Unknown TaskRun: INVALID_ARGUMENT.
* ``task_attempt`` is not the TaskRun's latest attempt, or the latest attempt is not
  TASK_RUNNING: OK with ``STOP_TASK`` and no checkpoint (the worker is fenced).
* Otherwise the checkpoint gets number ``total_checkpoints`` (0, 1, ...), the TaskRun's
  count goes up (the next ScheduledTask carries it as ``total_observed_checkpoints``)
  and one more timeout timer is armed. The answer is ``CONTINUE_TASK``.

Nothing else is checked: a halted WfRun does not fence its running attempt.
"""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import grpc
from littlehorse.model import (
    Checkpoint,
    CheckpointId,
    PutCheckpointRequest,
    PutCheckpointResponse,
    TaskStatus,
)

from fakes.littlehorse.core import NOT_FOUND_MESSAGE, abort, copied, now
from fakes.littlehorse.records import key_of
from fakes.littlehorse.taskruns import TaskRuns
from fakes.littlehorse.values import compact_values


class CheckpointRpcs(TaskRuns):
    """The two checkpoint RPCs."""

    def PutCheckpoint(
        self, request: PutCheckpointRequest, context: grpc.ServicerContext
    ) -> PutCheckpointResponse:
        """Store a checkpoint for the running attempt, or tell a stale worker to stop."""
        key = key_of(request.task_run_id)
        with self._cond:
            record = self._task_runs.get(key)
            if record is None:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Could not find specified TaskRun")
            run = record.run
            if request.task_attempt != len(run.attempts) - 1:
                return _stop()
            if record.latest.status != TaskStatus.TASK_RUNNING:
                return _stop()
            checkpoint = Checkpoint(
                id=CheckpointId(task_run=run.id, checkpoint_number=run.total_checkpoints),
                value=compact_values(copied(request.value)),
            )
            if request.HasField("logs"):
                checkpoint.logs = request.logs
            checkpoint.created_at.FromDatetime(now())
            self.checkpoints.setdefault(key, []).append(checkpoint)
            run.total_checkpoints += 1
            self._arm_timeout(record, request.task_attempt)
            self._cond.notify_all()
        return PutCheckpointResponse(
            flow_control_continue_type=PutCheckpointResponse.CONTINUE_TASK,
            created_checkpoint=checkpoint,
        )

    def GetCheckpoint(self, request: CheckpointId, context: grpc.ServicerContext) -> Checkpoint:
        """Return a stored checkpoint or abort NOT_FOUND."""
        key = key_of(request.task_run)
        with self._cond:
            stored = self.checkpoints.get(key, [])
            number = request.checkpoint_number
            found = stored[number] if 0 <= number < len(stored) else None
        if found is None:
            abort(context, grpc.StatusCode.NOT_FOUND, NOT_FOUND_MESSAGE)
        return found


def _stop() -> PutCheckpointResponse:
    return PutCheckpointResponse(flow_control_continue_type=PutCheckpointResponse.STOP_TASK)
