"""The prompt queue: pending prompts, the one running, finished ones (/history), interrupts.

One prompt runs at a time, lowest ``number`` first; every change sends ``status`` to every
socket; the /history entry is written after the run's last message (``history_delay_s``
later still: the race seen on the real server), then ``executing`` with ``node: null``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
import traceback
from typing import Any

from fakes.comfyui.host import Host
from fakes.comfyui.simulate import Cached, Job, Simulation, node_keys

HISTORY_LIMIT = 10000


class WorkQueue:
    """Pending, running and finished prompts, run one by one (loop thread only)."""

    def __init__(self, server: Host) -> None:
        self.server = server
        self.paused = False
        self.wake = asyncio.Event()
        self.interrupt_flag = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything (a fresh process)."""
        self.pending: list[Job] = []
        self.running: Job | None = None
        self.active: Simulation | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, Cached] = {}
        self.free_requested = False
        self._numbers, self._seq = itertools.count(), itertools.count()

    def start(self) -> None:
        """Start running prompts."""
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Abandon the running prompt and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def restart(self) -> None:
        """Abandon everything, as a restarted ComfyUI would (temp/ is emptied too)."""
        await self.stop()
        self.reset()
        self.server.files.clear_temp()
        self.start()

    async def _serve(self) -> None:
        while True:
            while self.paused or not self.pending:
                self.wake.clear()
                await self.wake.wait()
            job = self.running = self.pending.pop(0)
            self.server.started_times[job.prompt_id] = time.monotonic()
            self.announce()
            if self.free_requested:
                self.cache.clear()
                self.free_requested = False
            if not self.server.newer:  # 0.3.64 only remembers the previous prompt's nodes
                keys = set(node_keys(job.graph, self.server.files.fingerprint).values())
                self.cache = {key: hit for key, hit in self.cache.items() if key in keys}
            self.active = Simulation(job, self.server, self.cache, self.interrupt_flag)
            try:
                result = await self.active.run()
            except Exception:  # a bug in the fake: say so and keep serving
                traceback.print_exc()
                status = {"status_str": "error", "completed": False, "messages": []}
                result = {"outputs": {}, "status": status, "meta": {}}
            await asyncio.sleep(self.server.history_delay_s)
            if len(self.history) >= HISTORY_LIMIT:
                del self.history[next(iter(self.history))]
            self.history[job.prompt_id] = {"prompt": job.item(), **result}
            self.running = self.active = None
            self.announce()
            if job.client is not None:
                data = {"node": None, "prompt_id": job.prompt_id}
                self.server.hub.send("executing", data, job.client)

    @property
    def remaining(self) -> int:
        """Pending plus running prompts."""
        return len(self.pending) + (self.running is not None)

    def status(self) -> dict[str, Any]:
        """The payload of GET /prompt and of WebSocket ``status`` messages."""
        return {"exec_info": {"queue_remaining": self.remaining}}

    def announce(self) -> None:
        """Tell every socket the queue changed."""
        self.server.hub.send("status", {"status": self.status()}, None)

    def next_number(self) -> int:
        """The next submission number (every POST /prompt without one, even refused)."""
        return next(self._numbers)

    def add(self, job: Job) -> None:
        """Queue a validated prompt."""
        job.seq = next(self._seq)
        bisect.insort(self.pending, job, key=lambda j: (j.number, j.seq))
        self.server.submitted.append(job.prompt_id)
        self.server.received_times[job.prompt_id] = time.monotonic()
        self.announce()
        self.wake.set()

    def delete(self, prompt_id: str) -> bool:
        """Drop the first pending prompt with this id."""
        for index, job in enumerate(self.pending):
            if job.prompt_id == prompt_id:
                del self.pending[index]
                self.server.deleted.append(prompt_id)
                self.announce()
                return True
        return False

    def clear(self) -> None:
        """Drop every pending prompt."""
        self.server.deleted.extend(job.prompt_id for job in self.pending)
        self.pending = []
        self.announce()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt: any, or only if it is ``prompt_id``."""
        if prompt_id is not None and (self.running is None or self.running.prompt_id != prompt_id):
            return False
        self.interrupt_flag.set()
        return True

    def cancel(self, prompt_id: str) -> bool:
        """The jobs API's cancel: interrupt it if running, else dequeue it if pending."""
        return self.interrupt(prompt_id) or self.delete(prompt_id)

    def resume(self) -> None:
        """Let held prompts start."""
        self.paused = False
        self.wake.set()
