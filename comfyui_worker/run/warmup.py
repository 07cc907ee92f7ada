"""Warm start: run a workflow before taking tasks, so models are loaded for the first one.

``WORKER_WARMUP_WORKFLOW`` (a graph or template file, or a template name) is executed
on the worker's ComfyUI right at start, and its outputs are not kept. Until it has
succeeded, readiness says ``warmup: ...`` and the worker claims no task, so the first
real task does not pay for loading checkpoints. A technical failure (ComfyUI still
starting) is retried with backoff; a broken warm-up workflow is logged, once per
attempt, and keeps the worker not ready until it is fixed.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog

from comfyui_worker.errors import ComfyWorkerError
from comfyui_worker.run.execution import Runner
from comfyui_worker.workflow.request import Identity, TaskPreparer, task_source

log = structlog.get_logger("comfyui_worker.run.warmup")

MAX_BACKOFF_S = 30.0


class WarmUp:
    """The warm-up run and its state, for readiness."""

    def __init__(self, runner: Runner, preparer: TaskPreparer, source: str | None) -> None:
        self.runner = runner
        self.preparer = preparer
        self.source = source
        self.problem: str | None = "not run yet" if source else None

    async def run(self) -> None:
        """Retry until the warm-up succeeds (business failures too: config may be fixed)."""
        if self.source is None:
            return
        pause_s = 1.0
        while self.problem is not None:
            try:
                took_s = await asyncio.to_thread(self.once)
            except ComfyWorkerError as exc:
                self.problem = f"warm-up failed ({exc.name}): {exc.message[:200]}"
                log.warning("worker.warmup_failed", error=exc.name, message=exc.message)
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, MAX_BACKOFF_S)
                continue
            self.problem = None
            log.info("worker.warmed_up", workflow=self.source, took_ms=round(took_s * 1000))

    def once(self) -> float:
        """One warm-up execution on ComfyUI (no outputs saved); returns its wall time."""
        assert self.source is not None
        began = time.monotonic()
        prompt_id = str(uuid.uuid4())
        task = task_source(self.source, self.preparer.templates.names())
        request = self.preparer.request(
            task, Identity(prompt_id, f"warmup/{prompt_id}", fresh=True)
        )
        self.runner.warm_up(request)
        return time.monotonic() - began
