"""The supervisor: starts the SDK worker and keeps it connected to LittleHorse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from littlehorse.worker import LHTaskWorker

from comfyui_worker.errors import LittleHorseUnavailableError
from comfyui_worker.worker import sdk
from comfyui_worker.worker.ledger import Ledger

log = structlog.get_logger("comfyui_worker.worker.supervisor")


class Supervisor:
    """Runs the SDK worker: gets the TaskDef with retries, then keeps it connected.

    Replaces ``LHTaskWorker.start()``: a LittleHorse that is down at start is retried
    with backoff (a log line each time) instead of killing the process, and a dead
    stream or failed heartbeat restarts the SDK's heartbeat within ``MAX_BACKOFF_S``
    instead of at its next 60 s tick.
    """

    MAX_BACKOFF_S = 4.0
    CALM_S = 30.0

    def __init__(
        self,
        worker: LHTaskWorker,
        ledger: Ledger,
        *,
        address: str,
        ensure_task_def: Callable[[], Any],
    ) -> None:
        self.worker = worker
        self.ledger = ledger
        self.address = address
        self.ensure_task_def = ensure_task_def
        self._heartbeat: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Until cancelled: connect, then restart the heartbeat whenever trouble appears."""
        task_def = await self._task_def()
        sdk.install_task(self.worker, task_def)
        pause_s, last_trouble = 0.25, 0.0
        while True:
            self._restart_heartbeat()
            await self.ledger.wait_trouble()
            if time.monotonic() - last_trouble > self.CALM_S:  # a new outage: start small
                pause_s = 0.25
            last_trouble = time.monotonic()
            log.warning("lh.reconnecting", problem=self.ledger.problem, in_s=pause_s)
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, self.MAX_BACKOFF_S)

    async def _task_def(self) -> Any:
        """GetTaskDef (registering it if missing), retried with backoff while LH is away."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await asyncio.to_thread(self.ensure_task_def)
            except LittleHorseUnavailableError as exc:
                pause_s = min(0.5 * 2 ** (attempt - 1), self.MAX_BACKOFF_S)
                self.ledger.connection(polling=False, problem=exc.message)
                log.warning(
                    "lh.unavailable",
                    address=self.address,
                    attempt=attempt,
                    retry_in_s=pause_s,
                    message=exc.message,
                )
                await asyncio.sleep(pause_s)

    def _restart_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._heartbeat = asyncio.create_task(sdk.heartbeat(self.worker))

    def stop(self) -> None:
        """Stop polling and the heartbeat (tasks in flight go on and get reported)."""
        if sdk.started(self.worker):
            self.worker.stop()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
