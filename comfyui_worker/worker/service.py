"""Start-up and wiring: run the worker with its endpoint; register the TaskDef and WfSpec.

``main.py`` commands ``worker`` and ``register`` land here; the task boundary itself
is ``worker/task.py``, the SDK's internals are ``worker/sdk.py``.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import structlog
from littlehorse.worker import LHTaskWorker

from comfyui_worker.lh.api import LittleHorse
from comfyui_worker.lh.wfspec import task_timeout_s
from comfyui_worker.run.execution import Runner
from comfyui_worker.run.warmup import WarmUp
from comfyui_worker.settings import ComfySettings, WorkerSettings
from comfyui_worker.worker.drain import Drainer
from comfyui_worker.worker.health import HealthServer, Readiness
from comfyui_worker.worker.ledger import Ledger
from comfyui_worker.worker.metrics import Metrics
from comfyui_worker.worker.sdk import ObservedConfig, set_slots
from comfyui_worker.worker.supervisor import Supervisor
from comfyui_worker.worker.task import TaskHandler, task_function
from comfyui_worker.workflow.request import TaskPreparer

log = structlog.get_logger("comfyui_worker.worker.service")


def serve(comfy: ComfySettings, worker: WorkerSettings) -> int:
    """``main.py worker``: run until SIGTERM/SIGINT, then drain and exit 0."""
    return asyncio.run(_serve(comfy, worker))


async def _serve(comfy: ComfySettings, settings: WorkerSettings) -> int:
    ledger = Ledger()
    ledger.bind_loop()
    runner = Runner(comfy)
    preparer = TaskPreparer(comfy)
    warm_up = WarmUp(runner, preparer, comfy.warmup_workflow)
    readiness = _readiness(runner, ledger, warm_up)
    config = ObservedConfig(ledger, gate=readiness.gate)
    set_slots(config, comfy.task_slots)
    metrics = Metrics()
    metrics.track_running(ledger.running_age_s)
    ledger.on_call = metrics.littlehorse_round_trip
    runner.models.observers.append(metrics.model_outcome)
    lh = LittleHorse(config, settings.lh_address)
    cancellation = LittleHorse(config, settings.lh_address, timeout_s=2.0)  # asked every tick
    handler = TaskHandler(
        runner,
        preparer,
        ledger,
        metrics,
        config.task_worker_id,
        littlehorse=cancellation,
        readiness=readiness,
        ready_wait_s=settings.ready_wait_s,
    )
    fn = task_function(handler.execute)
    supervisor = Supervisor(
        LHTaskWorker(fn, settings.task_name, config),
        ledger,
        address=settings.lh_address,
        ensure_task_def=lambda: lh.ensure_task_def(settings.task_name, fn),
    )
    drainer = Drainer(supervisor, handler, runner, settings.drain_timeout_s)
    stuck_after_s = task_timeout_s(comfy)
    health = _health_server(settings, readiness, lambda: ledger.stuck_claim(stuck_after_s))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drainer.request_stop)
    await asyncio.to_thread(runner.known_server)  # a failure is logged, and retried later
    log.info("worker.started", task_name=settings.task_name, comfyui=comfy.base_url_str)
    warming = asyncio.create_task(warm_up.run())  # polling waits for it (the gate)
    try:
        return await drainer.run()
    finally:
        warming.cancel()
        if health is not None:
            health.stop()
        runner.close()


def _readiness(runner: Runner, ledger: Ledger, warm_up: WarmUp) -> Readiness:
    readiness = Readiness()
    readiness.add_problem("warmup", lambda: warm_up.problem, gating=True)
    readiness.add("comfyui", runner.client.ping, gating=True, cached=True)
    readiness.add("output", runner.store.check_writable, gating=True, cached=True)
    readiness.add_problem("littlehorse", ledger.littlehorse_problem, gating=False)
    return readiness


def _health_server(
    settings: WorkerSettings, readiness: Readiness, alive: Any
) -> HealthServer | None:
    """Start /healthz, /readyz and /metrics unless WORKER_HTTP_PORT is 0."""
    if settings.http_port == 0:
        return None
    return HealthServer(
        settings.http_host, settings.http_port, alive=alive, readiness=readiness
    ).start()
