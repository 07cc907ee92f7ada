"""The ledger: every task the SDK claimed, how far it got, and the connection's state.

Like arq's ``self.tasks``: claimed → started → finished → reported. The observed stub
feeds it; health, drain, the supervisor and the task function read it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from littlehorse.model import ReportTaskRun, ScheduledTask

Key = tuple[str, str, int]  # (wf_run_id, task_guid, attempt_number)


def key_of(task: ScheduledTask | ReportTaskRun) -> Key:
    """The ledger key of a scheduled task or of its report."""
    run = task.task_run_id
    return (run.wf_run_id.id, run.task_guid, task.attempt_number)


@dataclass
class Claim:
    """One task the SDK took from LittleHorse, and how far it got."""

    claimed_at: float
    observed_checkpoints: int = 0
    scheduled_at_ns: int = 0  # when LittleHorse scheduled this attempt (its ScheduledTask)
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class Ledger:
    """What the worker holds and how its LittleHorse connection is doing (thread-safe)."""

    claims: dict[Key, Claim] = field(default_factory=dict)
    input_errors: dict[Key, str] = field(default_factory=dict)
    failures: dict[Key, str] = field(default_factory=dict)  # what a TASK_FAILED report says
    fenced: set[Key] = field(default_factory=set)
    polling: bool = False
    problem: str | None = "not connected to LittleHorse yet"
    on_call: Callable[[str, float], None] | None = None  # (call, seconds): round trips
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _trouble: asyncio.Event | None = None
    _idle: asyncio.Event | None = None

    def bind_loop(self) -> None:
        """Create the loop-side events (call from the worker's event loop)."""
        self._trouble = asyncio.Event()
        self._idle = asyncio.Event()
        self._update_idle()

    # --- tasks ----------------------------------------------------------------------

    def claimed(self, key: Key, observed_checkpoints: int = 0, scheduled_at_ns: int = 0) -> None:
        """The SDK received this task from PollTask."""
        with self._lock:
            self.claims[key] = Claim(time.monotonic(), observed_checkpoints, scheduled_at_ns)
        self._update_idle()

    def scheduled_at_ns(self, key: Key) -> int:
        """When LittleHorse scheduled this attempt, in ns (0 if the claim was not seen).

        Full precision, unlike ``WorkerContext.scheduled_time`` (whole seconds): it tells
        apart two WfRuns that reuse one id, so their prompts never share an id.
        """
        with self._lock:
            claim = self.claims.get(key)
            return claim.scheduled_at_ns if claim is not None else 0

    def observed_checkpoints(self, key: Key) -> int:
        """How many checkpoints earlier attempts of this task recorded (at delivery)."""
        with self._lock:
            claim = self.claims.get(key)
            return claim.observed_checkpoints if claim is not None else 0

    def started(self, key: Key) -> None:
        """The task function was entered."""
        with self._lock:
            self.claims.setdefault(key, Claim(time.monotonic())).started_at = time.monotonic()

    def finished(self, key: Key) -> None:
        """The task function returned or raised; the SDK reports next."""
        with self._lock:
            claim = self.claims.get(key)
            if claim is not None:
                claim.finished_at = time.monotonic()

    def fence(self, key: Key) -> None:
        """LittleHorse answered STOP_TASK to a checkpoint of a task the worker still holds.

        A late one (a prefetched prompt's ``started`` record can land after the task was
        reported) is dropped, so nothing is kept for a task that is gone.
        """
        with self._lock:
            if key in self.claims:
                self.fenced.add(key)

    def reported(self, key: Key) -> None:
        """The report reached LittleHorse (or was given up on): the task is gone."""
        with self._lock:
            self.claims.pop(key, None)
            self.input_errors.pop(key, None)
            self.failures.pop(key, None)
            self.fenced.discard(key)
        self._update_idle()

    def held(self) -> int:
        """Tasks claimed and not yet reported."""
        with self._lock:
            return len(self.claims)

    def executing(self) -> int:
        """Tasks inside the task function right now."""
        with self._lock:
            return sum(1 for c in self.claims.values() if c.started_at and c.finished_at is None)

    def running_age_s(self) -> float:
        """Seconds since the oldest task now inside the task function started (0 if none)."""
        now = time.monotonic()
        with self._lock:
            starts = [
                c.started_at for c in self.claims.values() if c.started_at and c.finished_at is None
            ]
        return now - min(starts) if starts else 0.0

    def stuck_claim(self, bound_s: float) -> str | None:
        """A claimed task that has not started within ``bound_s`` (a leaked slot), if any."""
        now = time.monotonic()
        with self._lock:
            for key, claim in self.claims.items():
                if claim.started_at is None and now - claim.claimed_at > bound_s:
                    age = now - claim.claimed_at
                    return f"task {key[1]} attempt {key[2]} claimed {age:.0f}s ago, not started"
        return None

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every claimed task was reported; False if the timeout passed."""
        assert self._idle is not None, "bind_loop() first"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _update_idle(self) -> None:
        if self._idle is None:
            return
        if self.held():
            self._idle.clear()
        else:
            self._idle.set()

    def timed(self, call: str, began: float) -> None:
        """A LittleHorse round trip that started at ``began`` (monotonic) just ended."""
        if self.on_call is not None:
            self.on_call(call, time.monotonic() - began)

    # --- connection -----------------------------------------------------------------

    def connection(self, *, polling: bool | None = None, problem: str | None = None) -> None:
        """Record the stream's and the heartbeat's state; trouble wakes the supervisor."""
        with self._lock:
            if polling is not None:
                self.polling = polling
            self.problem = problem
        if problem is not None and self._trouble is not None:
            self._trouble.set()

    async def wait_trouble(self) -> None:
        """Wait until a heartbeat fails or a stream dies."""
        assert self._trouble is not None, "bind_loop() first"
        await self._trouble.wait()
        self._trouble.clear()

    def littlehorse_problem(self) -> str | None:
        """Why the worker cannot take work from LittleHorse right now, or None."""
        with self._lock:
            if self.problem is not None:
                return self.problem
            return None if self.polling else "no PollTask stream open"
