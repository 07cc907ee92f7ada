"""In-process fake of the LittleHorse gRPC API, enough for a Python task worker.

The fake implements the calls a ``littlehorse-client`` task worker makes
(PutTaskDef, GetTaskDef, RegisterTaskWorker, the PollTask stream, ReportTask,
PutCheckpoint, GetCheckpoint) plus PutWfSpec/GetWfSpec. Tests queue work with
:meth:`FakeLittleHorse.schedule` and read what the worker reported with
:meth:`FakeLittleHorse.wait_report`. Everything else aborts with UNIMPLEMENTED.

It runs a synchronous ``grpc.server`` on its own thread pool, so it keeps serving
while the test's thread or event loop is blocked (``LHTaskWorker.start()`` calls
GetTaskDef on a blocking stub).

Standalone use (serves until Ctrl-C)::

    python -m tests.fakes.littlehorse --port 2023 --schedule greet '["Ada"]'

prints its address, queues each ``--schedule`` task once a worker registered the
TaskDef, and prints every ReportTaskRun as JSON.
"""

# grpc and protobuf ship no type hints: calls into them are untyped.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, Self, TypeVar

import grpc
from google.protobuf.empty_pb2 import Empty  # type: ignore[attr-defined]
from google.protobuf.json_format import MessageToDict
from littlehorse.config import LHConfig
from littlehorse.model import (
    Checkpoint,
    CheckpointId,
    MetadataStatus,
    NodeRunId,
    PollTaskRequest,
    PollTaskResponse,
    PutCheckpointRequest,
    PutCheckpointResponse,
    PutTaskDefRequest,
    PutWfSpecRequest,
    RegisterTaskWorkerRequest,
    RegisterTaskWorkerResponse,
    ReportTaskRun,
    ScheduledTask,
    TaskDef,
    TaskDefId,
    TaskNodeReference,
    TaskRunId,
    TaskRunSource,
    VariableValue,
    VarNameAndVal,
    WfRunId,
    WfSpec,
    WfSpecId,
)
from littlehorse.model.service_pb2_grpc import (
    LittleHorseServicer,
    add_LittleHorseServicer_to_server,
)
from littlehorse.utils import to_variable_value
from littlehorse.worker import LHTaskWorker

__all__ = ["FakeLittleHorse", "WorkerThread", "close_sync_channels"]

_T = TypeVar("_T")

_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")

# Methods the fake implements; every other servicer method aborts UNIMPLEMENTED.
_IMPLEMENTED = frozenset(
    {
        "PutTaskDef",
        "GetTaskDef",
        "PutWfSpec",
        "GetWfSpec",
        "RegisterTaskWorker",
        "PollTask",
        "ReportTask",
        "PutCheckpoint",
        "GetCheckpoint",
    }
)


def _now() -> datetime:
    return datetime.now(UTC)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("ServicerContext.abort() returned")  # pragma: no cover


@dataclass(eq=False)
class _Stream:
    """One open PollTask stream."""

    context: grpc.ServicerContext
    client_id: str = ""
    dead: bool = False
    in_flight: ScheduledTask | None = None


@dataclass(eq=False)
class _PendingSchedule:
    task_def_name: str
    variables: list[Any] = field(default_factory=list)


class FakeLittleHorse(LittleHorseServicer):
    """A fake LittleHorse server for task-worker tests.

    Attributes are safe to read from the test thread; mutate state only through
    the methods. All waits use a single ``threading.Condition`` (no polling loops).
    """

    def __init__(self, host: str = "127.0.0.1", *, advertised_host: str | None = None) -> None:
        self.host = host
        self.port = 0
        self.advertised_host = advertised_host or host
        self.task_defs: dict[str, TaskDef] = {}
        self.wf_specs: dict[str, PutWfSpecRequest] = {}
        self.reports: list[ReportTaskRun] = []
        self.delivered: dict[tuple[str, int], float] = {}
        self.checkpoints: dict[tuple[str, str], list[Checkpoint]] = {}
        self.registered_workers: set[str] = set()
        self.heartbeats = 0
        self.polls_waiting = 0
        self.open_streams = 0
        self.requeued = 0
        self._drops_pending = 0
        self._task_def_requests: dict[str, PutTaskDefRequest] = {}
        self._wf_spec_revisions: dict[str, int] = {}
        self._queues: dict[str, collections.deque[ScheduledTask]] = {}
        self._waiting_by_def: collections.Counter[str] = collections.Counter()
        self._streams: set[_Stream] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind an ephemeral port (or ``self.port`` if set) and start serving."""
        if self._server is not None:
            raise RuntimeError("FakeLittleHorse already started")
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fake-lh")
        # No SO_REUSEPORT: a second server on a taken port must fail, not share it.
        server = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
        add_LittleHorseServicer_to_server(self, server)
        cause: Exception | None = None
        try:
            port = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:  # grpc raises when the address is taken
            port, cause = 0, exc
        if port == 0:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise OSError(f"could not bind {self.host}:{self.port}") from cause
        self.port = port
        with self._cond:
            self._stopped = False
        server.start()
        self._server = server
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Stop serving, cancel open streams and join the server's threads."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        server, executor = self._server, self._executor
        self._server, self._executor = None, None
        if server is not None:
            server.stop(grace_s).wait()
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port`` of the fake."""
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """``LHC_*`` variables pointing a worker (e.g. a subprocess) at the fake."""
        return {
            "LHC_API_HOST": self.host,
            "LHC_API_PORT": str(self.port),
            "LHC_API_PROTOCOL": "PLAINTEXT",
        }

    def config(self, **extra: str) -> LHConfig:
        """An ``LHConfig`` pointed at the fake; ``extra`` adds ``LHC_``/``LHW_`` keys.

        The fake's address wins over ``LHC_*`` variables in the process environment.
        """
        config = LHConfig()
        values = {**self.env(), **extra}
        config.load(values)
        # LHConfig.load() gives the environment precedence; never talk to a real server.
        config._configs.update(values)
        return config

    # ------------------------------------------------------------------ test API

    def schedule(
        self,
        task_def_name: str,
        variables: Sequence[Any],
        *,
        wf_run_id: str | None = None,
        task_guid: str | None = None,
        attempt_number: int = 0,
        total_observed_checkpoints: int | None = None,
    ) -> TaskRunId:
        """Queue a ScheduledTask for the TaskDef, as the server does for a TaskRun.

        ``variables`` are positional inputs: ``VariableValue``s, or plain Python
        values converted with ``to_variable_value``. A retry is the same
        ``task_guid`` with a higher ``attempt_number``. ``total_observed_checkpoints``
        defaults to the checkpoints stored for that TaskRun so far.
        """
        values = [v if isinstance(v, VariableValue) else to_variable_value(v) for v in variables]
        with self._cond:
            task_def = self.task_defs.get(task_def_name)
            if task_def is None:
                raise KeyError(f"TaskDef {task_def_name!r} is not registered")
            if len(values) != len(task_def.input_vars):
                raise ValueError(
                    f"TaskDef {task_def_name!r} takes {len(task_def.input_vars)} "
                    f"inputs, got {len(values)}"
                )
            wf_id = WfRunId(id=wf_run_id or uuid.uuid4().hex)
            task_run_id = TaskRunId(wf_run_id=wf_id, task_guid=task_guid or uuid.uuid4().hex)
            if total_observed_checkpoints is None:
                total_observed_checkpoints = len(self.checkpoints.get(_run_key(task_run_id), []))
            task = ScheduledTask(
                task_run_id=task_run_id,
                task_def_id=TaskDefId(name=task_def_name),
                attempt_number=attempt_number,
                variables=[
                    VarNameAndVal(
                        var_name=var_def.name,
                        value=value,
                        masked=var_def.type_def.masked,
                    )
                    for var_def, value in zip(task_def.input_vars, values, strict=True)
                ],
                created_at=_now(),
                source=TaskRunSource(
                    task_node=TaskNodeReference(
                        node_run_id=NodeRunId(wf_run_id=wf_id, thread_run_number=0, position=1)
                    )
                ),
                total_observed_checkpoints=total_observed_checkpoints,
            )
            self._queues.setdefault(task_def_name, collections.deque()).append(task)
            self._cond.notify_all()
            return task_run_id

    def queued(self, task_def_name: str) -> int:
        """How many scheduled tasks of that TaskDef no worker has taken yet."""
        with self._cond:
            return len(self._queues.get(task_def_name, ()))

    def wait_report(
        self, task_guid: str, attempt_number: int | None = None, timeout_s: float = 30
    ) -> ReportTaskRun:
        """Block until the first report for that task (and attempt, if given) arrives."""

        def find() -> ReportTaskRun | None:
            for report in self.reports:
                if report.task_run_id.task_guid == task_guid and (
                    attempt_number is None or report.attempt_number == attempt_number
                ):
                    return report
            return None

        what = f"report for task {task_guid} attempt {attempt_number}"
        return self.wait_for(find, timeout_s, what)

    def wait_delivered(
        self, task_guid: str, attempt_number: int = 0, timeout_s: float = 30
    ) -> float:
        """Block until that attempt was sent to a worker; returns the monotonic send time."""
        key = (task_guid, attempt_number)
        return self.wait_for(lambda: self.delivered.get(key), timeout_s, f"delivery of {key}")

    def wait_polling(self, timeout_s: float = 30, *, task_def_name: str | None = None) -> None:
        """Block until a worker has a PollTask request waiting (for that TaskDef, if given)."""

        def polling() -> bool:
            if task_def_name is None:
                return self.polls_waiting > 0
            return self._waiting_by_def[task_def_name] > 0

        self.wait_for(polling, timeout_s, "a waiting PollTask request")

    def wait_task_def(self, name: str, timeout_s: float = 30) -> TaskDef:
        """Block until the TaskDef has been registered (by the worker, say)."""
        return self.wait_for(lambda: self.task_defs.get(name), timeout_s, f"TaskDef {name}")

    def crash_streams(self) -> int:
        """Cancel every open PollTask stream (a server restart, as seen by workers).

        Tasks still queued stay queued. The SDK worker notices a dead stream only at
        its next heartbeat (60 s). Returns how many streams were cancelled.
        """
        with self._cond:
            streams = [s for s in self._streams if not s.dead]
        for stream in streams:
            stream.context.cancel()  # its done-callback wakes the handler
        return len(streams)

    def drop_next_delivery(self) -> None:
        """Fault injection: cancel the stream that takes the next task, before sending it.

        The task goes back to the queue (``requeued`` counts such tasks), as when a
        connection dies between the server choosing a task and the worker receiving it.
        """
        with self._cond:
            self._drops_pending += 1

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

    # ------------------------------------------------------------------ metadata RPCs

    def PutTaskDef(self, request: PutTaskDefRequest, context: grpc.ServicerContext) -> TaskDef:
        """Store a TaskDef; identical re-puts are no-ops, different ones ALREADY_EXISTS."""
        _check_name(request.name, context)
        with self._cond:
            existing = self._task_def_requests.get(request.name)
            if existing is None:
                task_def = TaskDef(
                    id=TaskDefId(name=request.name),
                    input_vars=request.input_vars,
                    return_type=request.return_type if request.HasField("return_type") else None,
                    description=request.description,
                    created_at=_now(),
                )
                self._task_def_requests[request.name] = request
                self.task_defs[request.name] = task_def
                self._cond.notify_all()
                return task_def
            if existing == request:
                return self.task_defs[request.name]
        _abort(
            context,
            grpc.StatusCode.ALREADY_EXISTS,
            f"TaskDef {request.name} already exists and is immutable.",
        )

    def GetTaskDef(self, request: TaskDefId, context: grpc.ServicerContext) -> TaskDef:
        """Return the TaskDef or abort NOT_FOUND."""
        with self._cond:
            task_def = self.task_defs.get(request.name)
        if task_def is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"Couldn't find TaskDef {request.name}")
        return task_def

    def PutWfSpec(self, request: PutWfSpecRequest, context: grpc.ServicerContext) -> WfSpec:
        """Store the request; a changed spec bumps the revision."""
        _check_name(request.name, context)
        with self._cond:
            previous = self.wf_specs.get(request.name)
            revision = self._wf_spec_revisions.get(request.name, -1)
            if previous is None or previous != request:
                revision += 1
            self._wf_spec_revisions[request.name] = revision
            self.wf_specs[request.name] = request
            self._cond.notify_all()
        return _wf_spec(request, revision)

    def GetWfSpec(self, request: WfSpecId, context: grpc.ServicerContext) -> WfSpec:
        """Return the latest stored WfSpec of that name or abort NOT_FOUND."""
        with self._cond:
            stored = self.wf_specs.get(request.name)
            revision = self._wf_spec_revisions.get(request.name, 0)
        if stored is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"Couldn't find WfSpec {request.name}")
        return _wf_spec(stored, revision)

    # ------------------------------------------------------------------ task-worker RPCs

    def RegisterTaskWorker(
        self, request: RegisterTaskWorkerRequest, context: grpc.ServicerContext
    ) -> RegisterTaskWorkerResponse:
        """Record the heartbeat and hand out the fake's own address to poll from."""
        with self._cond:
            self.registered_workers.add(request.task_worker_id)
            self.heartbeats += 1
            self._cond.notify_all()
        return RegisterTaskWorkerResponse(
            your_hosts=[{"host": self.advertised_host, "port": self.port}],
            is_cluster_healthy=True,
        )

    def PollTask(
        self, request_iterator: Iterator[PollTaskRequest], context: grpc.ServicerContext
    ) -> Iterator[PollTaskResponse]:
        """Answer each PollTaskRequest with the next queued task, waiting for one.

        A task taken for a stream that ends before grpc confirmed sending it (the
        generator is never resumed after its ``yield``) goes back to the queue.
        """
        stream = _Stream(context)
        with self._cond:
            if self._stopped:
                return
            self._streams.add(stream)
            self.open_streams += 1
            self._cond.notify_all()

        def on_done() -> None:  # runs on grpc's thread once the RPC has ended
            with self._cond:
                stream.dead = True
                self._requeue_in_flight(stream)
                self._cond.notify_all()

        try:
            if not context.add_callback(on_done):
                return
            for request in request_iterator:
                stream.client_id = request.client_id
                task = self._take(request.task_def_id.name, stream)
                if task is None:
                    return
                if self._drop_if_asked():
                    context.cancel()
                    self.wait_for(lambda: stream.dead, 10, "the dropped stream to end")
                yield PollTaskResponse(result=task)
                # grpc resumes the generator only after the response was sent.
                with self._cond:
                    stream.in_flight = None
        except grpc.RpcError:
            return  # the client went away while we read its next request
        finally:
            with self._cond:
                self._requeue_in_flight(stream)
                self._streams.discard(stream)
                self.open_streams -= 1
                self._cond.notify_all()

    def _take(self, task_def_name: str, stream: _Stream) -> ScheduledTask | None:
        with self._cond:
            self.polls_waiting += 1
            self._waiting_by_def[task_def_name] += 1
            self._cond.notify_all()
            try:
                while not (self._stopped or stream.dead):
                    queue = self._queues.get(task_def_name)
                    if queue:
                        task = queue.popleft()
                        stream.in_flight = task
                        key = (task.task_run_id.task_guid, task.attempt_number)
                        self.delivered[key] = time.monotonic()
                        return task
                    self._cond.wait()
                return None
            finally:
                self.polls_waiting -= 1
                self._waiting_by_def[task_def_name] -= 1
                self._cond.notify_all()

    def _drop_if_asked(self) -> bool:
        with self._cond:
            if self._drops_pending <= 0:
                return False
            self._drops_pending -= 1
            return True

    def _requeue_in_flight(self, stream: _Stream) -> None:
        """Put back a task taken for ``stream`` but not sent (caller holds the lock)."""
        task, stream.in_flight = stream.in_flight, None
        if task is None:
            return
        self.delivered.pop((task.task_run_id.task_guid, task.attempt_number), None)
        self._queues.setdefault(task.task_def_id.name, collections.deque()).appendleft(task)
        self.requeued += 1
        self._cond.notify_all()

    def ReportTask(self, request: ReportTaskRun, context: grpc.ServicerContext) -> Empty:
        """Store the report and wake waiters."""
        with self._cond:
            self.reports.append(request)
            self._cond.notify_all()
        return Empty()

    def PutCheckpoint(
        self, request: PutCheckpointRequest, context: grpc.ServicerContext
    ) -> PutCheckpointResponse:
        """Append a checkpoint to the TaskRun and tell the worker to continue."""
        with self._cond:
            stored = self.checkpoints.setdefault(_run_key(request.task_run_id), [])
            checkpoint = Checkpoint(
                id=CheckpointId(task_run=request.task_run_id, checkpoint_number=len(stored)),
                value=request.value,
                logs=request.logs,
                created_at=_now(),
            )
            stored.append(checkpoint)
            self._cond.notify_all()
        return PutCheckpointResponse(
            flow_control_continue_type=PutCheckpointResponse.CONTINUE_TASK,
            created_checkpoint=checkpoint,
        )

    def GetCheckpoint(self, request: CheckpointId, context: grpc.ServicerContext) -> Checkpoint:
        """Return a stored checkpoint or abort NOT_FOUND."""
        with self._cond:
            stored = self.checkpoints.get(_run_key(request.task_run), [])
            found = (
                stored[request.checkpoint_number]
                if request.checkpoint_number < len(stored)
                else None
            )
        if found is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, "Couldn't find Checkpoint")
        return found


def _unimplemented(name: str) -> Callable[..., Any]:
    def method(self: FakeLittleHorse, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by the fake")

    method.__name__ = name
    return method


for _name in dir(LittleHorseServicer):
    if _name[0].isupper() and _name not in _IMPLEMENTED:
        setattr(FakeLittleHorse, _name, _unimplemented(_name))


def _run_key(task_run_id: TaskRunId) -> tuple[str, str]:
    return (task_run_id.wf_run_id.id, task_run_id.task_guid)


def _check_name(name: str, context: grpc.ServicerContext) -> None:
    if not _NAME_RE.match(name):
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Name {name!r} must be a valid hostname (kebab-case)",
        )


def _wf_spec(request: PutWfSpecRequest, revision: int) -> WfSpec:
    spec = WfSpec(
        id=WfSpecId(name=request.name, major_version=0, revision=revision),
        created_at=_now(),
        status=MetadataStatus.ACTIVE,
        entrypoint_thread_name=request.entrypoint_thread_name,
    )
    for thread_name, thread_spec in request.thread_specs.items():
        spec.thread_specs[thread_name].CopyFrom(thread_spec)
    if request.HasField("retention_policy"):
        spec.retention_policy.CopyFrom(request.retention_policy)
    return spec


# ---------------------------------------------------------------------- worker helper


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


# ---------------------------------------------------------------------- standalone


def _describe(report: ReportTaskRun) -> str:
    data = MessageToDict(report, preserving_proto_field_name=True)
    return json.dumps(data, sort_keys=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake until Ctrl-C, optionally queueing tasks and printing reports."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.littlehorse", description=main.__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=2023, help="0 picks a free port")
    parser.add_argument(
        "--advertised-host", help="host handed to workers by RegisterTaskWorker (default --host)"
    )
    parser.add_argument(
        "--schedule",
        nargs=2,
        action="append",
        default=[],
        metavar=("TASK_DEF", "JSON_ARGS"),
        help="queue a task once its TaskDef exists; JSON_ARGS is a JSON list of inputs",
    )
    args = parser.parse_args(argv)
    pending = [_PendingSchedule(name, list(json.loads(raw))) for name, raw in args.schedule]

    fake = FakeLittleHorse(args.host, advertised_host=args.advertised_host)
    fake.port = args.port
    fake.start()
    print(f"fake LittleHorse listening on {fake.address}", flush=True)
    printed = 0
    try:
        with fake._cond:
            while True:
                for item in [p for p in pending if p.task_def_name in fake.task_defs]:
                    pending.remove(item)
                    run_id = fake.schedule(item.task_def_name, item.variables)
                    print(
                        f"scheduled {item.task_def_name} task_guid={run_id.task_guid}", flush=True
                    )
                for report in fake.reports[printed:]:
                    print(f"report {_describe(report)}", flush=True)
                printed = len(fake.reports)
                fake._cond.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        print("fake LittleHorse stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
