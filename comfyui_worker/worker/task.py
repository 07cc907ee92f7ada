"""The LittleHorse boundary: the ``execute-comfyui-workflow`` task function.

Errors become LittleHorse terms here and nowhere else, by reading each error's own
classification: business failures become ``LHTaskException`` (never retried) with
a bounded JSON content; technical ones are raised as themselves, so the SDK reports
TASK_FAILED with a message that keeps their details (status, URL, node), and the
WfSpec retries them. Nothing a task does can take the process down.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from littlehorse import to_variable_value
from littlehorse.exceptions import LHTaskException
from littlehorse.worker import WorkerContext

from comfyui_worker.bounds import bound_text, json_size
from comfyui_worker.comfy.waiting import StopCheck
from comfyui_worker.errors import (
    ComfyWorkerError,
    ExecutionInterruptedError,
    InvalidWorkflowError,
    WorkerNotReadyError,
    WorkerShuttingDownError,
    as_error,
)
from comfyui_worker.lh.api import LittleHorse
from comfyui_worker.outputs.store import OutputStore
from comfyui_worker.result import MAX_RESULT_BYTES, RunResult
from comfyui_worker.run.execution import Runner
from comfyui_worker.run.fencing import Fence
from comfyui_worker.worker.fence import CheckpointFence
from comfyui_worker.worker.health import Readiness
from comfyui_worker.worker.ledger import Key, Ledger
from comfyui_worker.worker.metrics import Metrics
from comfyui_worker.workflow.request import Identity, TaskPreparer

log = structlog.get_logger("comfyui_worker.worker.task")

PROMPT_NAMESPACE = uuid.UUID("6f1c1f4e-3b1a-4f0e-9a51-2c0c3e5b7d10")
MAX_TRAIL_LINES = 20
MAX_TRAIL_CHARS = 1000
RECORD_BUDGET_BYTES = 900_000  # LittleHorse rejects a TaskRun record over ~1,047,000 bytes
MIN_RESULT_BYTES = 16 * 1024
MAX_TRACE_CHARS = 6000
QUEUED_CHECK_S = 1.0  # a task that waited longer may have been cancelled meanwhile: ask first


def prompt_id_for(wf_run_id: str, task_guid: str, attempt: int, scheduled_at_ns: int) -> str:
    """The ComfyUI prompt id of one attempt: deterministic, and a canonical lowercase UUID.

    A WfRun id can be reused (after DeleteWfRun or retention) and a task guid is the
    same ``0-1`` in every WfRun of a WfSpec: the attempt's scheduling time, from
    LittleHorse, is what makes the id name this attempt and no other, ever.
    """
    name = f"{wf_run_id}/{task_guid}/{attempt}/{scheduled_at_ns}"
    return str(uuid.uuid5(PROMPT_NAMESPACE, name))


def identity_for(key: Key, scheduled_at_ns: int) -> Identity:
    """Prompt id and run key of one attempt; its input images are named after the prompt."""
    wf_run_id, task_guid, attempt = key
    return Identity(
        prompt_id=prompt_id_for(wf_run_id, task_guid, attempt, scheduled_at_ns),
        run_key=f"{_safe(wf_run_id)}/{_safe(task_guid)}",
        fresh=attempt == 0,  # with nothing recorded (checked by the runner), nothing to adopt
    )


class Trail:
    """A short, bounded log for the TaskRun (``ctx.log``), not every progress tick."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._lines = 0

    def __call__(self, line: str) -> None:
        """Add one line unless the trail is full."""
        if self._lines < MAX_TRAIL_LINES:
            self._ctx.log(bound_text(line, MAX_TRAIL_CHARS))
            self._lines += 1


class TaskHandler:
    """Runs one task at a time on the shared Runner and maps outcomes for LittleHorse."""

    def __init__(
        self,
        runner: Runner,
        preparer: TaskPreparer,
        ledger: Ledger,
        metrics: Metrics | None = None,
        worker_id: str = "",
        littlehorse: LittleHorse | None = None,
        readiness: Readiness | None = None,
        ready_wait_s: float = 0.0,
    ) -> None:
        self.runner = runner
        self.preparer = preparer
        self.ledger = ledger
        self.worker_id = worker_id
        self.littlehorse = littlehorse
        self.metrics = metrics
        self.readiness = readiness
        self.ready_wait_s = ready_wait_s
        self.draining = False

    def interrupt_preparation(self) -> None:
        """Abandon input-image fetches and model downloads in flight: the worker is draining."""
        self.preparer.fetcher.interrupt()
        self.runner.models.interrupt()

    @property
    def store(self) -> OutputStore:
        """Where outputs go (checked before each task)."""
        return self.runner.store

    async def execute(self, workflow: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
        """The task function body: run, then translate errors at this one boundary."""
        key: Key = (ctx.wf_run_id.id, ctx.idempotency_key, ctx.attempt_number)
        self.ledger.started(key)
        scheduled_at_ns = self.ledger.scheduled_at_ns(key) or time.time_ns()
        identity = identity_for(key, scheduled_at_ns)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            wf_run_id=key[0], task_guid=key[1], attempt=key[2], prompt_id=identity.prompt_id
        )
        trail = Trail(ctx)
        try:
            self._refuse(key)
            await self._until_ready()
            stop = _Cancellation(self.littlehorse, key[0]) if self.littlehorse else None
            before_submit = _asked_if_waited(stop, scheduled_at_ns)
            fence = await CheckpointFence.open(
                ctx, self.ledger, key, self.worker_id, before_submit=before_submit
            )
            result, payload = await asyncio.to_thread(
                self._run, workflow, identity, trail, fence, stop
            )
        except Exception as exc:  # every failure leaves through the one mapping below
            raise self._reported(key, exc, trail) from None
        finally:
            self.ledger.finished(key)
        if self.metrics:
            self.metrics.succeeded(result)
        return payload

    def _refuse(self, key: Key) -> None:
        """Fail fast, before any work: draining, or an input the SDK could not decode."""
        self._refuse_if_draining()
        bad_input = self.ledger.input_errors.get(key)
        if bad_input is not None:
            raise InvalidWorkflowError(bad_input, field="workflow")

    def _refuse_if_draining(self) -> None:
        if self.draining:
            raise WorkerShuttingDownError(
                "worker is shutting down; the task goes back to LittleHorse"
            )

    async def _until_ready(self) -> None:
        """Hold a task claimed while ComfyUI or the store is down, rather than fail it."""
        if self.readiness is None:
            return
        problem = await self.readiness.wait_ready(self.ready_wait_s, lambda: self.draining)
        self._refuse_if_draining()
        if problem is not None:
            raise WorkerNotReadyError(
                f"the worker could not run the task: {problem} (still down after "
                f"{self.ready_wait_s:g}s, WORKER_READY_WAIT_SEC)",
                problem=problem,
            )

    def _run(
        self,
        workflow: dict[str, Any],
        identity: Identity,
        trail: Trail,
        fence: Fence,
        stop: StopCheck | None,
    ) -> tuple[RunResult, dict[str, Any]]:
        """Run the task; the result and its bounded JSON, sized off the event loop."""
        self.store.check_before_task()
        request = self.preparer.request(workflow, identity)
        log.info("task.started", template=request.template)
        try:
            result = self.runner.run(request, trail=trail, fence=fence, stop=stop)
        except ExecutionInterruptedError:
            if self.runner.aborted:  # we interrupted it ourselves while shutting down
                raise WorkerShuttingDownError("interrupted by the worker's shutdown") from None
            raise
        log.info("task.succeeded", files=len(result.outputs), timings_ms=result.timings_ms)
        return result, result.to_json(_result_budget(workflow))

    def _reported(self, key: Key, exc: Exception, trail: Trail) -> Exception:
        """The exception to hand the SDK: LHTaskException for business, the error otherwise.

        A technical error's report carries ``describe()`` (name, message, details), not
        the SDK's traceback (``stub.ObservedStub.ReportTask`` swaps it in).
        """
        if not isinstance(exc, ComfyWorkerError):
            log.error("task.unexpected_failure", exc_info=exc)
        error = as_error(exc, trace_chars=MAX_TRACE_CHARS)
        if self.metrics:
            self.metrics.failed(error)
        if error.business:
            log.warning("task.business_failure", error=error.name, message=error.message)
            trail(f"failed: {error.name}: {error.message}")
            return LHTaskException(error.name, error.message, to_variable_value(error.content()))
        log.warning("task.technical_failure", error=error.name, message=error.message)
        self.ledger.failures[key] = error.describe()
        if self.readiness is not None:  # the next claim must not trust a stale "ok"
            self.readiness.invalidate()
        trail(f"failed (will be retried): {error.name}: {error.message}")
        return error.with_traceback(None)


class _Cancellation:
    """The waiter's stop check: was the task's WfRun stopped (its job cancelled)."""

    def __init__(self, littlehorse: LittleHorse, wf_run_id: str) -> None:
        self.littlehorse = littlehorse
        self.wf_run_id = wf_run_id
        self.gone = False

    def refuse_if_stopped(self) -> None:
        """Before anything runs: a job cancelled while it waited in LittleHorse runs nothing."""
        if self._stopped():
            raise ExecutionInterruptedError(
                f"the job was cancelled before it started: WfRun {self.wf_run_id} was stopped "
                "while its task waited in LittleHorse; nothing was submitted to ComfyUI",
                wf_run_id=self.wf_run_id,
                cancelled=True,
            )

    def _stopped(self) -> bool:
        if self.gone:
            return False
        stopped = self.littlehorse.stopped(self.wf_run_id)
        if stopped is None:
            self.gone = True  # a task without a WfRun: nothing to cancel it
        return bool(stopped)

    def __call__(self) -> ComfyWorkerError | None:
        if not self._stopped():
            return None
        return ExecutionInterruptedError(
            f"the job was cancelled: WfRun {self.wf_run_id} was stopped, so its prompt was "
            "cancelled in ComfyUI",
            wf_run_id=self.wf_run_id,
            cancelled=True,
        )


def _asked_if_waited(stop: _Cancellation | None, scheduled_at_ns: int) -> Callable[[], None]:
    """The check made just before the POST, beside the checkpoint's round trip.

    A task that waited (in LittleHorse, parked, or for its turn in ComfyUI) may have
    been cancelled meanwhile: LittleHorse is asked then, and a stopped job runs nothing.
    """

    def before_submit() -> None:
        if stop is not None and (time.time_ns() - scheduled_at_ns) / 1e9 > QUEUED_CHECK_S:
            stop.refuse_if_stopped()

    return before_submit


def _result_budget(workflow: dict[str, Any]) -> int:
    """What the result may take of the TaskRun record, after the input itself."""
    return max(MIN_RESULT_BYTES, min(MAX_RESULT_BYTES, RECORD_BUDGET_BYTES - json_size(workflow)))


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
