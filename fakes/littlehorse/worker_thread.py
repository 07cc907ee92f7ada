"""Run real ``LHTaskWorker``s on a thread of their own, and close what ``LHConfig`` cached."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Self

from littlehorse.config import LHConfig
from littlehorse.worker import LHTaskWorker

__all__ = ["WorkerThread", "close_sync_channels"]


def close_sync_channels(config: LHConfig) -> None:
    """Close the blocking gRPC channels an ``LHConfig`` cached (``create_task_def`` etc.)."""
    for channel_id, channel in list(config._opened_channels.items()):
        if not channel_id.is_async:
            channel.close()
            del config._opened_channels[channel_id]


class WorkerThread:
    """Run ``LHTaskWorker``s in a thread with its own event loop, like ``littlehorse.start``.

    ``stop()`` calls ``worker.stop()``, cancels the start tasks (``stop()`` alone does
    not interrupt the SDK's 60 s heartbeat sleep), closes the workers' channels and
    joins the thread. ``errors`` holds exceptions the start tasks ended with.
    """

    def __init__(self, *workers: LHTaskWorker) -> None:
        self.workers = workers
        self.errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lh-worker-thread", daemon=True)

    def start(self, timeout_s: float = 10) -> Self:
        """Start the thread and wait until its loop runs."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("worker thread did not start")
        return self

    def stop(self, timeout_s: float = 10) -> None:
        """Stop the workers and join the thread."""
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError("worker thread did not stop")
        for worker in self.workers:
            close_sync_channels(worker._config)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        tasks = [asyncio.create_task(worker.start()) for worker in self.workers]
        stopper = asyncio.create_task(self._stop_event.wait())
        self._ready.set()
        try:
            await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            while not stopper.done():
                # A worker failed to start: keep the others until told to stop.
                pending = [t for t in tasks if not t.done()]
                await asyncio.wait([stopper, *pending], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for worker in self.workers:
                if hasattr(worker, "_task"):  # set once GetTaskDef succeeded
                    worker.stop()
            for task in (*tasks, stopper):
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self.errors.extend(
                r
                for r in results
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
            )
            for worker in self.workers:
                opened = worker._config._opened_channels
                for channel_id, channel in list(opened.items()):
                    if channel_id.is_async:
                        await channel.close()
                        del opened[channel_id]
