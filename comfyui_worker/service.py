"""Start-up and wiring: register the TaskDef/WfSpec, run the worker with its endpoint.

``main.py`` commands ``worker`` and ``register`` land here; the task boundary itself
is ``lh_worker.py``.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import structlog
from littlehorse import create_task_def
from littlehorse.config import LHConfig
from littlehorse.worker import LHTaskWorker, WorkerContext

from comfyui_worker.drain import Drainer
from comfyui_worker.execution import Runner
from comfyui_worker.health import HealthServer
from comfyui_worker.lh_worker import TaskFailed, TaskHandler, task_function
from comfyui_worker.metrics import Metrics
from comfyui_worker.settings import ComfySettings, WorkerSettings
from comfyui_worker.tasks import TaskPreparer

log = structlog.get_logger("comfyui_worker.service")


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
