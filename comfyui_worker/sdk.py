"""Everything that leans on the LittleHorse SDK's internals, in this one module.

The SDK (littlehorse-client 1.3.0) leaves gaps a production worker must close:

- it decodes a task's JSON input before its own ``try``: a value that is not JSON
  (or is nested thousands deep) never gets reported and its slot leaks for good;
- it notices a dead PollTask stream, or a LittleHorse that came back, only at its
  next 60 s heartbeat, and gives up at start if LittleHorse is down;
- it gives up reporting a result after ~30 s of LittleHorse being away;
- a task it claimed but parked (N slots claim N+1 tasks) is invisible until a slot frees.

The seam is ``LHConfig.stub()``, which the SDK calls for every stub it uses:
``ObservedConfig`` hands out stubs that watch PollTask, ReportTask and
RegisterTaskWorker, feeding a ``Ledger`` of what the worker holds (claimed →
started → finished → reported, like arq's ``self.tasks``). The few private names
used besides (``LHTask``, ``LHTaskWorker._task``/``_heartbeat``/``_connections``,
``LHConnection._schedule_task_semaphore``, ``LHConfig._configs``) are pinned by
``tests/test_sdk.py``, which fails loudly if an SDK upgrade moves them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from littlehorse.config import LHConfig
from littlehorse.model import (
    PutCheckpointResponse,
    ReportTaskRun,
    ScheduledTask,
    VariableValue,
)
from littlehorse.worker import LHTask, LHTaskWorker, WorkerContext

from comfyui_worker.errors import AttemptFencedError, LittleHorseUnavailableError
from comfyui_worker.fencing import Submission

log = structlog.get_logger("comfyui_worker.sdk")

RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}
)
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


# --- the stub seam ---------------------------------------------------------------------

Gate = Callable[[], Awaitable[None]]


class ObservedConfig(LHConfig):
    """The SDK's config, handing out stubs that feed the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        gate: Gate | None = None,
        report_patience_s: float = 600.0,
    ) -> None:
        super().__init__()
        self.ledger = ledger
        self.gate = gate
        self.report_patience_s = report_patience_s

    def stub(
        self, server: str | None = None, name: str = "default", async_channel: bool = False
    ) -> Any:
        """The SDK's stub, observed when it is one of the worker's async stubs."""
        real = super().stub(server=server, name=name, async_channel=async_channel)
        return _ObservedStub(real, self) if async_channel else real


def set_slots(config: LHConfig, slots: int) -> None:
    """How many tasks the SDK runs at once (its LHW_NUM_WORKER_THREADS), overriding the env."""
    config._configs["LHW_NUM_WORKER_THREADS"] = str(slots)


class _ObservedStub:
    """Delegates to the real stub; watches the calls a task worker makes."""

    def __init__(self, real: Any, config: ObservedConfig) -> None:
        self._real = real
        self._config = config
        self._ledger = config.ledger
        self._asked_at = time.monotonic()  # when the last poll request went out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def PollTask(self, requests: AsyncIterator[Any], **kwargs: Any) -> AsyncIterator[Any]:
        """The poll stream: requests wait for the gate, replies are recorded and guarded."""
        call = self._real.PollTask(self._gated(requests), **kwargs)
        return self._replies(call)

    async def _gated(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        gate = self._config.gate
        async for request in requests:
            if gate is not None:
                await gate()  # no task is claimed while the worker is not ready
            self._asked_at = time.monotonic()
            yield request

    async def _replies(self, call: Any) -> AsyncIterator[Any]:
        self._ledger.connection(polling=True)
        try:
            async for reply in call:
                if reply.HasField("result"):
                    self._ledger.timed("claim", self._asked_at)
                    task = reply.result
                    self._ledger.claimed(
                        key_of(task), task.total_observed_checkpoints, timestamp_ns(task.created_at)
                    )
                    guard_inputs(reply.result, self._ledger)
                yield reply
        except grpc.aio.AioRpcError as exc:
            self._ledger.connection(polling=False, problem=_describe(exc, "PollTask"))
            log.warning("lh.poll_stream_lost", code=exc.code().name, detail=exc.details())
            raise
        finally:
            call.cancel()
            self._ledger.connection(polling=False, problem=self._ledger.problem)

    async def RegisterTaskWorker(self, request: Any, **kwargs: Any) -> Any:
        """The heartbeat: its outcome is the worker's view of LittleHorse."""
        try:
            reply = await self._real.RegisterTaskWorker(request, **kwargs)
        except grpc.aio.AioRpcError as exc:
            self._ledger.connection(polling=False, problem=_describe(exc, "RegisterTaskWorker"))
            raise
        self._ledger.connection(problem=None)
        return reply

    async def PutCheckpoint(self, request: Any, **kwargs: Any) -> Any:
        """A checkpoint: LittleHorse's STOP_TASK answer fences the attempt (ledger.fenced)."""
        began = time.monotonic()
        reply = await self._real.PutCheckpoint(request, **kwargs)
        self._ledger.timed("checkpoint", began)
        if reply.flow_control_continue_type != PutCheckpointResponse.CONTINUE_TASK:
            run = request.task_run_id
            self._ledger.fenced.add((run.wf_run_id.id, run.task_guid, request.task_attempt))
        return reply

    async def ReportTask(self, report: ReportTaskRun, **kwargs: Any) -> Any:
        """Report, riding out a LittleHorse that is away for up to the report patience.

        A TASK_FAILED report carries the SDK's traceback (install paths, frames) as its
        message; the error's own ``<name>: <message>`` line replaces it.
        """
        key = key_of(report)
        failure = self._ledger.failures.get(key)
        if failure is not None and report.HasField("error"):  # type: ignore[no-untyped-call]
            report.error.message = failure
        deadline = time.monotonic() + self._config.report_patience_s
        pause_s = 0.5
        try:
            while True:
                try:
                    began = time.monotonic()
                    answer = await self._real.ReportTask(report, **kwargs)
                    self._ledger.timed("report", began)
                    return answer
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RETRYABLE_CODES or time.monotonic() >= deadline:
                        log.error(
                            "lh.report_lost",
                            task_guid=key[1],
                            attempt=key[2],
                            code=exc.code().name,
                            detail=exc.details(),
                        )
                        return None  # the SDK would only retry for 30 s more
                    log.warning("lh.report_retry", task_guid=key[1], code=exc.code().name)
                    await asyncio.sleep(pause_s)
                    pause_s = min(pause_s * 2, 5.0)
        finally:
            self._ledger.reported(key)


def guard_inputs(task: ScheduledTask, ledger: Ledger) -> None:
    """Make every JSON input decodable before the SDK decodes it outside its ``try``.

    A value that fails to parse is replaced by an empty one and the reason kept in
    the ledger, so the task function runs, sees it, and reports ``invalid-workflow``.
    """
    for variable in task.variables:
        value: VariableValue = variable.value
        kind = value.WhichOneof("value")  # type: ignore[no-untyped-call]
        if kind not in ("json_obj", "json_arr"):
            continue
        text = getattr(value, kind)
        try:
            json.loads(text)
        except (ValueError, RecursionError) as exc:
            reason = f"input '{variable.var_name}' is not valid JSON: {type(exc).__name__}: {exc}"
            ledger.input_errors[key_of(task)] = reason[:500]
            setattr(value, kind, "{}" if kind == "json_obj" else "[]")


def timestamp_ns(stamp: Any) -> int:
    """A protobuf Timestamp as integer nanoseconds since the epoch."""
    return int(stamp.seconds) * 1_000_000_000 + int(stamp.nanos)


def _describe(exc: grpc.aio.AioRpcError, call: str) -> str:
    return f"{call}: {exc.code().name}: {(exc.details() or '')[:200]}"


# --- start-up, keeping connected, drain ------------------------------------------------


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
        self.worker._task = LHTask(self.worker._callable, task_def)
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
        self._heartbeat = asyncio.create_task(self.worker._heartbeat())

    def stop(self) -> None:
        """Stop polling and the heartbeat (tasks in flight go on and get reported)."""
        if hasattr(self.worker, "_task"):
            self.worker.stop()
        if self._heartbeat is not None:
            self._heartbeat.cancel()


def release_parked(worker: LHTaskWorker) -> int:
    """Let tasks the SDK claimed but parked enter the task function now (to be handed back).

    With N slots the SDK claims N+1 tasks and holds the extra one on its slot
    semaphore until a slot frees; while draining, that would keep a task LittleHorse
    thinks is running for a whole execution. One release per connection lets it in.
    """
    released = 0
    for connection in list(worker._connections.values()):
        connection._schedule_task_semaphore.release()
        released += 1
    return released


class CheckpointFence:
    """``fencing.Fence`` on LittleHorse task checkpoints (``ctx.execute_and_checkpoint``).

    Earlier submissions are read when the task starts (on the event loop); a new one is
    recorded from the execution thread, just before the POST. STOP_TASK (seen by the
    observed stub) becomes ``AttemptFencedError``; a LittleHorse that cannot be reached
    becomes ``LittleHorseUnavailableError``: either way nothing is submitted.
    """

    RECORD_TIMEOUT_S = 30.0

    def __init__(
        self, ctx: WorkerContext, ledger: Ledger, key: Key, worker_id: str, earlier: list[Any]
    ) -> None:
        self._ctx = ctx
        self._ledger = ledger
        self._key = key
        self._worker_id = worker_id
        self._earlier = earlier
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, ctx: WorkerContext, ledger: Ledger, key: Key, worker_id: str) -> Any:
        """Read every checkpoint earlier attempts recorded (the SDK replays them in order)."""
        earlier = []
        try:
            for _ in range(ledger.observed_checkpoints(key)):
                earlier.append(await ctx.execute_and_checkpoint(_unused))
        except grpc.aio.AioRpcError as exc:
            raise LittleHorseUnavailableError(
                f"could not read earlier submissions from LittleHorse ({exc.code().name})",
                task_guid=key[1],
            ) from None
        return cls(ctx, ledger, key, worker_id, earlier)

    @property
    def earlier(self) -> list[Submission]:
        """The recorded submissions, oldest first (foreign values ignored)."""
        found = (Submission.from_json(value) for value in self._earlier)
        return [submission for submission in found if submission is not None]

    def record(self, comfyui_url: str, prompt_id: str, graph_sha256: str) -> None:
        """PutCheckpoint before the POST; blocks the execution thread until answered."""
        submission = Submission(comfyui_url, prompt_id, self._worker_id, self._key[2], graph_sha256)
        future = asyncio.run_coroutine_threadsafe(
            self._ctx.execute_and_checkpoint(lambda _context: submission.to_json()), self._loop
        )
        try:
            future.result(self.RECORD_TIMEOUT_S)
        except Exception as exc:  # the SDK raises a bare Exception for STOP_TASK
            raise self._why(exc) from None
        log.info("lh.submission_recorded", prompt_id=prompt_id)

    def _why(self, exc: Exception) -> Exception:
        if self._key in self._ledger.fenced:
            return AttemptFencedError(
                f"LittleHorse says attempt {self._key[2]} of task {self._key[1]} is no longer "
                "current (it timed out or was superseded); nothing was submitted",
                task_guid=self._key[1],
                attempt=self._key[2],
            )
        if isinstance(exc, grpc.aio.AioRpcError | TimeoutError):
            return LittleHorseUnavailableError(
                f"could not record the submission with LittleHorse ({type(exc).__name__}); "
                "nothing was submitted",
                task_guid=self._key[1],
            )
        return exc


def _unused(_context: Any) -> None:
    """Never called: reading a checkpoint that exists does not run the callable."""
