"""Graceful shutdown, arq-style: stop polling, finish what runs, report everything, exit.

On SIGTERM/SIGINT the worker stops asking LittleHorse for work, hands back at once
any task it claimed but has not started (``worker-shutting-down``, retried
elsewhere), waits up to ``WORKER_DRAIN_TIMEOUT_SEC`` for the execution in flight,
and waits until every task it holds was reported: the ledger tracks what the
worker itself took, so nothing depends on the SDK's private coroutine names. Past
the grace period (or on a second signal) the prompt is interrupted in ComfyUI, so
the GPU is freed and the task is reported as a retryable failure rather than left
to time out. A repeat of the signal within ``SAME_SIGNAL_S`` is the same request
(``uv run`` forwards SIGTERM, and a process-group kill delivers it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import structlog

from comfyui_worker.run.execution import Runner
from comfyui_worker.worker.sdk import release_parked
from comfyui_worker.worker.supervisor import Supervisor

log = structlog.get_logger("comfyui_worker.worker.drain")

FLUSH_TIMEOUT_S = 15.0
SAME_SIGNAL_S = 1.0


class Draining(Protocol):
    """The task handler's switch that makes it refuse new work."""

    draining: bool

    def interrupt_preparation(self) -> None:
        """Abandon input fetches in flight (their tasks are handed back)."""


class Drainer:
    """Owns the worker's lifetime: start, wait for a stop request, drain, exit."""

    def __init__(
        self,
        supervisor: Supervisor,
        handler: Draining,
        runner: Runner,
        grace_s: float,
    ) -> None:
        self.supervisor = supervisor
        self.handler = handler
        self.runner = runner
        self.ledger = supervisor.ledger
        self.grace_s = grace_s
        self._stop = asyncio.Event()
        self._first_signal_at: float | None = None

    def request_stop(self) -> None:
        """Signal handler: the first signal drains, a later one interrupts at once."""
        now = time.monotonic()
        if self._first_signal_at is None:
            self._first_signal_at = now
            self._stop.set()
        elif now - self._first_signal_at >= SAME_SIGNAL_S:
            log.warning("worker.drain_forced")
            self.runner.abort()
        else:
            log.info("worker.signal_repeated", within_s=SAME_SIGNAL_S)

    async def run(self) -> int:
        """Run the SDK worker until stopped; return the process exit code."""
        supervised = asyncio.create_task(self.supervisor.run())
        stopping = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({supervised, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if supervised in done:
            stopping.cancel()
            supervised.result()  # re-raise why the worker could not run
            return 1
        await self.drain()
        supervised.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervised
        log.info("worker.stopped")
        return 0

    async def drain(self) -> None:
        """Stop polling, hand back parked tasks, finish or abort the one in flight, flush."""
        began = time.monotonic()
        self.handler.draining = True
        self.handler.interrupt_preparation()
        self.runner.hand_back_pending()  # a prefetched prompt that has not started
        self.supervisor.stop()
        parked = release_parked(self.supervisor.worker)
        log.info(
            "worker.drain_started", held=self.ledger.held(), grace_s=self.grace_s, released=parked
        )
        if not await self.ledger.wait_idle(self.grace_s):
            log.warning("worker.drain_timeout", grace_s=self.grace_s, held=self.ledger.held())
            self.runner.abort()
            if not await self.ledger.wait_idle(FLUSH_TIMEOUT_S):
                log.warning("worker.reports_unflushed", held=self.ledger.held())
        log.info("worker.drained", drain_ms=round((time.monotonic() - began) * 1000))
