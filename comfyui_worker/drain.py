"""Graceful shutdown, arq-style: stop polling, let the running task finish, then exit.

On SIGTERM/SIGINT the worker stops asking LittleHorse for work, waits up to
``WORKER_DRAIN_TIMEOUT_SEC`` for the execution in flight, and waits for the SDK to
send its report. Past the grace period (or on a second signal) the prompt is
interrupted in ComfyUI, so the GPU is freed and the task is reported as a retryable
failure rather than left to time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import structlog
from littlehorse.worker import LHTaskWorker

from comfyui_worker.execution import Runner

log = structlog.get_logger("comfyui_worker.drain")

SDK_TASKS = ("LHConnection._execute_task", "LHConnection._report_task")
FLUSH_TIMEOUT_S = 15.0
SETTLE_S = 0.3


class Busy(Protocol):
    """Whatever tells us a task is executing right now."""

    @property
    def draining(self) -> bool:
        """Whether new tasks must be refused."""
        ...

    @draining.setter
    def draining(self, value: bool) -> None:
        """Start refusing new tasks."""
        ...

    def is_busy(self) -> bool:
        """Whether an execution is in flight."""
        ...


class Drainer:
    """Owns the worker's lifetime: start, wait for a stop request, drain, exit."""

    def __init__(self, worker: LHTaskWorker, handler: Busy, runner: Runner, grace_s: float) -> None:
        self.worker = worker
        self.handler = handler
        self.runner = runner
        self.grace_s = grace_s
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Signal handler: the first signal drains, a second one interrupts at once."""
        if self._stop.is_set():
            log.warning("worker.drain_forced")
            self.runner.abort()
        self._stop.set()

    async def run(self) -> int:
        """Run the SDK worker until stopped; return the process exit code."""
        started = asyncio.create_task(self.worker.start())
        stopping = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({started, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if started in done:
            stopping.cancel()
            started.result()  # re-raise why the SDK stopped
            return 1
        await self.drain()
        started.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await started
        log.info("worker.stopped")
        return 0

    async def drain(self) -> None:
        """Stop polling, finish or abort the task in flight, flush the SDK's reports."""
        began = time.monotonic()
        self.handler.draining = True
        self.worker.stop()
        log.info("worker.drain_started", busy=self.handler.is_busy(), grace_s=self.grace_s)
        if not await self._idle_within(self.grace_s):
            log.warning("worker.drain_timeout", grace_s=self.grace_s)
            self.runner.abort()
            await self._idle_within(FLUSH_TIMEOUT_S)
        await self._reports_flushed(FLUSH_TIMEOUT_S)
        log.info("worker.drained", drain_ms=round((time.monotonic() - began) * 1000))

    async def _idle_within(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.handler.is_busy():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _reports_flushed(self, timeout_s: float) -> None:
        """Wait until the SDK has no task executing or report unsent (stable briefly)."""
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if _sdk_tasks_pending():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= SETTLE_S:
                return
            await asyncio.sleep(0.05)
        log.warning("worker.reports_unflushed", timeout_s=timeout_s)


def _sdk_tasks_pending() -> bool:
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", "")
        if task is not current and not task.done() and name in SDK_TASKS:
            return True
    return False
