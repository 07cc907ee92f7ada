"""State, lock and timers shared by every part of the fake.

All state lives on one object guarded by one ``threading.Condition``: gRPC
handlers, the timer thread and test helpers take it, mutate, and ``notify_all``
so that every ``wait_for`` re-evaluates its probe. Nothing polls.

Durations the server measures (task timeouts, retry backoff) are multiplied by
``time_scale``, so a test can run a 5 s backoff in 5 ms.

Like the server's, every timestamp the fake stamps has millisecond precision, and a
TaskDef or WfSpec revision can be made invisible to reads for ``metadata_lag_s`` after
its Put (the server applies a write through Kafka before its reads see it).
"""

# grpc and protobuf ship no type hints: calls into them are untyped.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import collections
import heapq
import itertools
import os
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp  # type: ignore[attr-defined]
from littlehorse.model import (
    Checkpoint,
    PutTaskDefRequest,
    PutWfSpecRequest,
    ReportTaskRun,
    ScheduledTask,
    TaskDef,
    WfSpec,
)

from fakes.littlehorse.records import Stream, TaskRunKey, TaskRunRecord, WfRunRecord

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)

NOT_FOUND_MESSAGE = "Requested object was not found."
#: Where ``metadata_lag_s`` comes from when the constructor is not given one.
METADATA_LAG_ENV = "FAKE_LH_METADATA_LAG_S"
#: The lag the server 1.2.1 showed (visible after 0.14-0.37 s); opt in with this.
SERVER_METADATA_LAG_S = 0.25


def default_metadata_lag_s() -> float:
    """``$FAKE_LH_METADATA_LAG_S`` if set, else 0 (metadata readable at once)."""
    raw = os.environ.get(METADATA_LAG_ENV, "").strip()
    return float(raw) if raw else 0.0


def now() -> datetime:
    """The wall-clock time stamped on records (not scaled), in whole milliseconds.

    The server keeps times as ``java.util.Date``, so every timestamp it serves has
    millisecond precision.
    """
    stamp = datetime.now(UTC)
    return stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)


def to_millis(timestamp: Timestamp) -> Timestamp:
    """Truncate a protobuf Timestamp to whole milliseconds, in place (what the server keeps)."""
    timestamp.nanos = timestamp.nanos // 1_000_000 * 1_000_000
    return timestamp


def copied(message: _M) -> _M:
    """A deep copy of a protobuf message: what a read hands out, never the stored one."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """End the RPC with ``code``; ``ServicerContext.abort`` raises, this says so to mypy."""
    context.abort(code, details)
    raise AssertionError("ServicerContext.abort() returned")  # pragma: no cover


class ApiError(Exception):
    """A gRPC error decided under the lock, raised to the handler that aborts with it."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class FakeCore:
    """The fake's state; subclasses add the RPCs and the engines."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        advertised_host: str | None = None,
        time_scale: float = 1.0,
        metadata_lag_s: float | None = None,
    ) -> None:
        self.host = host
        self.port = 0
        self.advertised_host = advertised_host or host
        #: Multiplies task timeouts and retry backoff delays (0.01 = 100x faster).
        self.time_scale = time_scale
        #: Seconds (wall clock, never scaled) a Put TaskDef or WfSpec revision stays
        #: invisible to reads; applies to Puts made after a change.
        self.metadata_lag_s = default_metadata_lag_s() if metadata_lag_s is None else metadata_lag_s
        # Metadata.
        self.task_defs: dict[str, TaskDef] = {}
        self.wf_specs: dict[str, PutWfSpecRequest] = {}
        self._task_def_requests: dict[str, PutTaskDefRequest] = {}
        self._wf_spec_versions: dict[str, list[WfSpec]] = {}
        #: Monotonic time from which reads see a TaskDef (by name) / WfSpec (name, revision).
        self._task_def_visible_at: dict[str, float] = {}
        self._wf_spec_visible_at: dict[tuple[str, int], float] = {}
        # What workers sent and received.
        self.reports: list[ReportTaskRun] = []
        self.delivered: dict[tuple[str, int], float] = {}
        self.checkpoints: dict[tuple[str, str], list[Checkpoint]] = {}
        self.registered_workers: set[str] = set()
        self.heartbeats = 0
        # The PollTask side.
        self.requeued = 0
        self._drops_pending = 0
        self._queues: dict[str, collections.deque[ScheduledTask]] = {}
        #: Queued ScheduledTasks whose WfRun was deleted (by ``id()``): claiming one ends
        #: the claiming stream, as on the server.
        self._orphaned: dict[int, ScheduledTask] = {}
        self._waiting_by_def: collections.Counter[str] = collections.Counter()
        self._streams: set[Stream] = set()
        # Runs.
        self._task_runs: dict[TaskRunKey, TaskRunRecord] = {}
        self._wf_runs: dict[str, WfRunRecord] = {}
        # Concurrency.
        self._cond = threading.Condition()
        self._stopped = True
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._timer_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ waiting

    @property
    def open_streams(self) -> int:
        """PollTask streams open now (read under the lock for a consistent answer)."""
        return len(self._streams)

    @property
    def polls_waiting(self) -> int:
        """PollTask requests waiting for a task, over every TaskDef."""
        return sum(self._waiting_by_def.values())

    def wait_for(self, probe: Callable[[], _T | None], timeout_s: float, what: str = "") -> _T:
        """Block until ``probe()`` (called under the fake's lock) is not None/False.

        The probe is re-evaluated whenever the fake's state changes.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                result = probe()
                if result is not None and result is not False:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
                self._cond.wait(remaining)

    # ------------------------------------------------------------------ timers

    def _add_timer(
        self, delay_s: float, callback: Callable[[], None], *, scaled: bool = True
    ) -> None:
        """Run ``callback`` under the lock after ``delay_s`` server seconds (scaled).

        ``scaled=False`` takes ``delay_s`` as wall-clock seconds. Timers survive
        ``stop()``: like the server's, they fire once it serves again. Caller holds the lock.
        """
        scale = self.time_scale if scaled else 1.0
        due = time.monotonic() + max(0.0, delay_s) * scale
        heapq.heappush(self._timers, (due, next(self._timer_seq), callback))
        self._cond.notify_all()

    def _start_timers(self) -> None:
        self._timer_thread = threading.Thread(
            target=self._run_timers, name="fake-lh-timers", daemon=True
        )
        self._timer_thread.start()

    def _stop_timers(self) -> None:
        thread, self._timer_thread = self._timer_thread, None
        if thread is not None:
            thread.join(10)

    def _run_timers(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._timers and self._timers[0][0] <= time.monotonic():
                    _, _, callback = heapq.heappop(self._timers)
                    try:
                        callback()
                    except Exception:  # a bug in the fake must not stop its clock
                        traceback.print_exc()
                    self._cond.notify_all()
                    continue
                timeout = self._timers[0][0] - time.monotonic() if self._timers else None
                self._cond.wait(timeout)

    # ------------------------------------------------------------------ hooks

    def _task_run_changed(self, record: TaskRunRecord) -> None:
        """Called (under the lock) after a TaskRun moved; the WfRun engine overrides it."""

    def _task_def(self, name: str) -> TaskDef | None:
        """The TaskDef as the server's processor sees it: at once, no read lag."""
        return self.task_defs.get(name)

    # ------------------------------------------------------------------ read lag

    def _lag_from_now(self) -> float:
        """When something written now becomes visible; arms a wake-up for waiters."""
        lag = max(0.0, self.metadata_lag_s)
        if lag > 0:
            # wait_for() probes re-run on notify: wake them when the write shows.
            self._add_timer(lag, lambda: None, scaled=False)
        return time.monotonic() + lag

    def _visible_task_def(self, name: str) -> TaskDef | None:
        """The TaskDef as reads see it: None until ``metadata_lag_s`` after its Put."""
        visible_at = self._task_def_visible_at.get(name)
        if visible_at is None or time.monotonic() < visible_at:
            return None
        return self.task_defs.get(name)

    def _find_wf_spec(
        self,
        name: str,
        major_version: int | None,
        revision: int | None,
        *,
        visible: bool = True,
    ) -> WfSpec | None:
        """That revision, or the latest when ``revision`` is None (caller holds the lock).

        With ``visible`` (reads, RunWf, SearchWfRun) a revision counts only from
        ``metadata_lag_s`` after its Put, so right after a new revision the latest is
        still the one before. The fake only makes major version 0.
        """
        versions = self._wf_spec_versions.get(name, [])
        if visible:
            clock = time.monotonic()
            versions = [
                v
                for v in versions
                if self._wf_spec_visible_at.get((name, v.id.revision), 0.0) <= clock
            ]
        if not versions or major_version not in (None, 0):
            return None
        if revision is None:
            return versions[-1]
        found = [v for v in versions if v.id.revision == revision]
        return found[0] if found else None
