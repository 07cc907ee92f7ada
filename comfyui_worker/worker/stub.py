"""The observed stub: the SDK's own gRPC stub, watched call by call.

PollTask replies are recorded in the ledger and their JSON inputs made decodable
(the SDK decodes them outside its ``try``); RegisterTaskWorker says how the connection
is; PutCheckpoint's STOP_TASK answer fences the attempt; ReportTask rides out a
LittleHorse that is away for up to the report patience (the SDK gives up after ~30 s).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc
import structlog
from littlehorse.model import PutCheckpointResponse, ReportTaskRun, ScheduledTask, VariableValue

from comfyui_worker.lh.rpc import describe, is_transient
from comfyui_worker.worker.ledger import Ledger, key_of

log = structlog.get_logger("comfyui_worker.worker.stub")

Gate = Callable[[], Awaitable[None]]


class Observer(Protocol):
    """What the stub needs of the config that made it (``sdk.ObservedConfig``)."""

    ledger: Ledger
    gate: Gate | None
    report_patience_s: float


class ObservedStub:
    """Delegates to the real stub; watches the calls a task worker makes."""

    def __init__(self, real: Any, config: Observer) -> None:
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
            self._ledger.connection(polling=False, problem=describe(exc, "PollTask"))
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
            self._ledger.connection(polling=False, problem=describe(exc, "RegisterTaskWorker"))
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
            self._ledger.fence((run.wf_run_id.id, run.task_guid, request.task_attempt))
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
        first_try = time.monotonic()
        deadline = first_try + self._config.report_patience_s
        pause_s = 0.5
        try:
            while True:
                try:
                    began = time.monotonic()
                    answer = await self._real.ReportTask(report, **kwargs)
                    self._ledger.timed("report", began)
                    return answer
                except grpc.aio.AioRpcError as exc:
                    if not is_transient(exc) or time.monotonic() >= deadline:
                        log.error(
                            "lh.report_lost",
                            task_guid=key[1],
                            attempt=key[2],
                            code=exc.code().name,
                            detail=exc.details(),
                        )
                        return None  # the SDK would only retry for 30 s more
                    waited_s = round(time.monotonic() - first_try, 1)
                    log.warning(
                        "lh.report_retry", task_guid=key[1], code=exc.code().name, waited_s=waited_s
                    )
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
