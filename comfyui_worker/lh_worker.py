"""The LittleHorse boundary: the ``execute-comfyui-workflow`` task, failures, drain.

Errors become LittleHorse terms here and nowhere else. Business failures (the
input is wrong, a node raised, someone interrupted) become ``LHTaskException`` with
a JSON content and are never retried; technical ones become TASK_FAILED and are
retried by the WfSpec. Nothing a task does can take the process down.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from littlehorse import to_variable_value
from littlehorse.exceptions import LHTaskException
from littlehorse.worker import WorkerContext

from comfyui_worker.errors import (
    ComfyWorkerError,
    ExecutionFailedError,
    ExecutionInterruptedError,
    WorkerShuttingDownError,
    WorkflowError,
)
from comfyui_worker.execution import Runner, RunRequest
from comfyui_worker.metrics import Metrics
from comfyui_worker.tasks import TaskPreparer

log = structlog.get_logger("comfyui_worker.lh_worker")

BUSINESS = (WorkflowError, ExecutionFailedError, ExecutionInterruptedError)
PROMPT_NAMESPACE = uuid.UUID("6f1c1f4e-3b1a-4f0e-9a51-2c0c3e5b7d10")
MAX_TRAIL_LINES = 20


class TaskFailed(Exception):
    """A technical failure reported as TASK_FAILED (retried by the WfSpec's policy)."""


def prompt_id_for(wf_run_id: str, task_guid: str, attempt: int) -> str:
    """The ComfyUI prompt id of one attempt: deterministic, so retries can find it."""
    return str(uuid.uuid5(PROMPT_NAMESPACE, f"{wf_run_id}/{task_guid}/{attempt}"))


class Trail:
    """A short, bounded log for the TaskRun (``ctx.log``), not every progress tick."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._lines = 0

    def __call__(self, line: str) -> None:
        """Add one line unless the trail is full."""
        if self._lines < MAX_TRAIL_LINES:
            self._ctx.log(line[:1000])
            self._lines += 1


class TaskHandler:
    """Runs one task at a time on the shared Runner and maps outcomes for LittleHorse."""

    def __init__(
        self, runner: Runner, preparer: TaskPreparer, metrics: Metrics | None = None
    ) -> None:
        self.metrics = metrics
        self.runner = runner
        self.preparer = preparer
        self.draining = False
        self._busy = threading.Event()
        self.started_at: float | None = None

    def is_busy(self) -> bool:
        """Whether an execution is in flight (the drain waits for it)."""
        return self._busy.is_set()

    async def execute(self, workflow: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
        """The task function body: run, then translate errors at this one boundary."""
        wf_run_id, guid, attempt = ctx.wf_run_id.id, ctx.idempotency_key, ctx.attempt_number
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            wf_run_id=wf_run_id,
            task_guid=guid,
            attempt=attempt,
            prompt_id=prompt_id_for(wf_run_id, guid, attempt),
        )
        trail = Trail(ctx)
        try:
            if self.draining:
                raise WorkerShuttingDownError(
                    "worker is shutting down; the task goes back to LittleHorse"
                )
            self._busy.set()
            try:
                result = await asyncio.to_thread(
                    self._run, workflow, wf_run_id, guid, attempt, trail
                )
            finally:
                self._busy.clear()
            if self.metrics:
                self.metrics.succeeded(result)
            return result
        except BUSINESS as exc:
            if self.metrics:
                self.metrics.failed(exc.name, business=True)
            log.warning("task.business_failure", error=exc.name, message=exc.message)
            trail(f"failed: {exc.name}: {exc.message}")
            raise LHTaskException(exc.name, exc.message, to_variable_value(exc.content())) from None
        except ComfyWorkerError as exc:
            if self.metrics:
                self.metrics.failed(exc.name, business=False)
            log.warning("task.technical_failure", error=exc.name, message=exc.message)
            trail(f"failed (will be retried): {exc.name}: {exc.message}")
            raise TaskFailed(f"{exc.name}: {exc.message}") from None
        except Exception as exc:
            if self.metrics:
                self.metrics.failed("internal-error", business=False)
            log.exception("task.unexpected_failure")
            trail(f"failed unexpectedly (will be retried): {type(exc).__name__}: {exc}")
            raise TaskFailed(f"internal-error: {type(exc).__name__}: {exc}") from exc

    def _run(
        self, workflow: dict[str, Any], wf_run_id: str, guid: str, attempt: int, trail: Trail
    ) -> dict[str, Any]:
        prompt_id = prompt_id_for(wf_run_id, guid, attempt)
        self.started_at = time.monotonic()
        try:
            prepared = self.preparer.prepare(workflow, unique_prefix=guid[:12])
            request = RunRequest(
                graph=prepared.graph,
                prompt_id=prompt_id,
                run_key=f"{_safe(wf_run_id)}/{_safe(guid)}",
                earlier_prompt_ids=tuple(prompt_id_for(wf_run_id, guid, a) for a in range(attempt)),
                uploads=prepared.uploads,
                params=prepared.params,
                template=prepared.template,
            )
            log.info("task.started", template=prepared.template)
            result = self.runner.run(request, trail=trail)
            log.info(
                "task.succeeded", files=len(result["outputs"]), timings_ms=result["timings_ms"]
            )
            return result
        except ExecutionInterruptedError:
            if self.runner.aborted:  # we interrupted it ourselves while shutting down
                raise WorkerShuttingDownError("interrupted by the worker's shutdown") from None
            raise
        finally:
            self.started_at = None


def _safe(value: str) -> str:
    """A path segment from an id (LittleHorse ids are already [A-Za-z0-9-_])."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in value).lstrip(".") or "_"


Execute = Callable[[dict[str, Any], WorkerContext], Awaitable[dict[str, Any]]]


def task_function(execute: Execute) -> Execute:
    """The function the SDK inspects: JSON_OBJ in, JSON_OBJ out, context last."""

    async def execute_comfyui_workflow(
        workflow: dict[str, Any], ctx: WorkerContext
    ) -> dict[str, Any]:
        return await execute(workflow, ctx)

    return execute_comfyui_workflow
