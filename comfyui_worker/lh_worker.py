"""The LittleHorse boundary: the ``execute-comfyui-workflow`` task, failures, drain.

This is the only module that speaks LittleHorse's terms. Business failures (the
input is wrong, a node raised, someone interrupted) become ``LHTaskException`` with
a JSON content and are never retried; technical ones become TASK_FAILED and are
retried by the WfSpec. Nothing a task does can take the process down.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from littlehorse import create_task_def, to_variable_value
from littlehorse.config import LHConfig
from littlehorse.exceptions import LHTaskException
from littlehorse.worker import LHTaskWorker, WorkerContext

from comfyui_worker.errors import (
    ComfyWorkerError,
    ExecutionFailedError,
    ExecutionInterruptedError,
    WorkerShuttingDownError,
    WorkflowError,
)
from comfyui_worker.execution import Runner, RunRequest
from comfyui_worker.health import HealthServer
from comfyui_worker.metrics import Metrics
from comfyui_worker.settings import ComfySettings, WorkerSettings
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


async def _not_served(workflow: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """Stands in for the handler where only the TaskDef's signature is needed."""
    raise TaskFailed("this process only registers the TaskDef; it does not execute tasks")


def lh_config() -> LHConfig:
    """The SDK's own config (LHC_* pass through), pinned to one worker thread."""
    config = LHConfig()
    config.load({"LHW_NUM_WORKER_THREADS": "1"})
    return config


def ensure_task_def(config: LHConfig, task_name: str, fn: Any) -> None:
    """Register the TaskDef unless it exists (start() needs it)."""
    import grpc
    from littlehorse.model import TaskDefId

    try:
        config.stub().GetTaskDef(TaskDefId(name=task_name), timeout=30)
    except grpc.RpcError as exc:
        if getattr(exc, "code", lambda: None)() != grpc.StatusCode.NOT_FOUND:
            raise
        create_task_def(fn, task_name, config, timeout=30)
        log.info("lh.task_def_registered", task_name=task_name)


def serve(comfy: ComfySettings, worker: WorkerSettings) -> int:
    """``main.py worker``: run until SIGTERM/SIGINT, then drain and exit 0."""
    return asyncio.run(_serve(comfy, worker))


async def _serve(comfy: ComfySettings, worker_settings: WorkerSettings) -> int:
    from comfyui_worker.drain import Drainer

    runner = Runner(comfy)
    metrics = Metrics()
    handler = TaskHandler(runner, TaskPreparer(comfy), metrics)
    metrics.track_running(lambda: handler.started_at)
    fn = task_function(handler.execute)
    config = lh_config()
    await asyncio.to_thread(ensure_task_def, config, worker_settings.task_name, fn)
    worker = LHTaskWorker(fn, worker_settings.task_name, config)
    drainer = Drainer(worker, handler, runner, worker_settings.drain_timeout_s)
    health = _health_server(worker_settings, worker, runner, config, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drainer.request_stop)
    log.info("worker.started", task_name=worker_settings.task_name, comfyui=comfy.base_url_str)
    try:
        return await drainer.run()
    finally:
        if health is not None:
            health.stop()
        runner.close()


def _health_server(
    settings: WorkerSettings,
    worker: LHTaskWorker,
    runner: Runner,
    config: LHConfig,
    metrics: Metrics,
) -> HealthServer | None:
    """Start /healthz, /readyz and /metrics unless WORKER_HTTP_PORT is 0."""
    if settings.http_port == 0:
        return None
    from littlehorse.model import TaskDefId

    def alive() -> str | None:
        health = worker.health()
        return None if health.healthy else f"LittleHorse worker {health.reason.value}"

    def comfyui() -> None:
        try:
            runner.client.ping()
        except Exception:
            metrics.comfy_up.set(0)
            raise
        metrics.comfy_up.set(1)

    def littlehorse() -> None:
        config.stub(name="readyz").GetTaskDef(TaskDefId(name=settings.task_name), timeout=2)

    probes = {"comfyui": comfyui, "littlehorse": littlehorse}
    return HealthServer(
        settings.http_host, settings.http_port, alive=alive, ready_probes=probes
    ).start()


def register(comfy: ComfySettings, worker_settings: WorkerSettings) -> int:
    """``main.py register``: the TaskDef and the example ``comfyui-generate`` WfSpec."""
    from littlehorse import create_workflow_spec

    from comfyui_worker.wfspec import build_workflow

    config = lh_config()
    fn = task_function(_not_served)
    ensure_task_def(config, worker_settings.task_name, fn)
    create_workflow_spec(build_workflow(comfy, worker_settings.task_name), config, timeout=30)
    log.info("lh.wf_spec_registered", wf_spec="comfyui-generate")
    return 0
