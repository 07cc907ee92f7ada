"""The fake LittleHorse server, driven by the real littlehorse-client SDK."""

# grpc and the generated LittleHorse stubs ship no type hints.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import littlehorse
import pytest
from littlehorse.config import LHConfig
from littlehorse.exceptions import LHTaskException
from littlehorse.model import (
    CheckpointId,
    DeleteWfRunRequest,
    ExponentialBackoffRetryPolicy,
    GetLatestWfSpecRequest,
    LHErrorType,
    LHStatus,
    ListNodeRunsRequest,
    ListTaskRunsRequest,
    ListVariablesRequest,
    LittleHorseStub,
    NodeRunId,
    PollTaskRequest,
    PutCheckpointRequest,
    PutCheckpointResponse,
    PutTenantRequest,
    PutWfSpecRequest,
    ReportTaskRun,
    ResumeWfRunRequest,
    RunWfRequest,
    ScheduledTask,
    SearchTaskRunRequest,
    SearchWfRunRequest,
    StopWfRunRequest,
    TaskDefId,
    TaskRunId,
    TaskStatus,
    ThreadType,
    VariableId,
    VariableMatch,
    VariableType,
    VariableValue,
    WfRunId,
    WfSpecId,
)
from littlehorse.utils import extract_value, to_variable_value
from littlehorse.worker import LHTaskWorker, WorkerContext
from littlehorse.workflow import Workflow, WorkflowThread

from fakes.littlehorse import (
    SERVER_METADATA_LAG_S,
    FakeLittleHorse,
    WorkerThread,
    close_sync_channels,
)

ROOT = Path(__file__).resolve().parents[1]
# grpc.aio starts one process-wide poller thread on first use and keeps it.
GRPC_GLOBAL_THREAD = "(_poll_wrapper)"


async def greet(name: str, ctx: WorkerContext) -> str:
    """Greet, or fail on the magic names "boom" (LHTaskException) and "crash"."""
    ctx.log(f"wf={ctx.wf_run_id.id} attempt={ctx.attempt_number} key={ctx.idempotency_key}")
    if name == "boom":
        raise LHTaskException("bad-thing", "msg", to_variable_value({"k": 1}))
    if name == "crash":
        raise RuntimeError("plain failure")
    return f"Hello, {name}!"


async def shout(name: str) -> str:
    """Upper-case the name (a task whose TaskDef is never registered)."""
    return name.upper()


async def shout_count(count: int) -> str:
    """Differs from greet's TaskDef (an INT input)."""
    return str(count)


def status(error: BaseException) -> grpc.StatusCode:
    """The status code of a failed gRPC call."""
    assert isinstance(error, grpc.Call)
    code: grpc.StatusCode = error.code()
    return code


def details(error: BaseException) -> str:
    """The status message of a failed gRPC call."""
    assert isinstance(error, grpc.Call)
    return str(error.details())


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads behind."""
    before = set(threading.enumerate())
    yield

    def leaked() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.endswith(GRPC_GLOBAL_THREAD)
        ]

    deadline = time.monotonic() + 5
    while leaked() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert leaked() == []


@pytest.fixture
def fake() -> Iterator[FakeLittleHorse]:
    server = FakeLittleHorse().start()
    yield server
    server.stop()


@pytest.fixture
def config(fake: FakeLittleHorse) -> Iterator[LHConfig]:
    cfg = fake.config(LHW_NUM_WORKER_THREADS="1")
    yield cfg
    close_sync_channels(cfg)


@pytest.fixture
def greet_worker(fake: FakeLittleHorse, config: LHConfig) -> Iterator[WorkerThread]:
    littlehorse.create_task_def(greet, "greet", config)
    with WorkerThread(LHTaskWorker(greet, "greet", config)) as thread:
        fake.wait_polling(10, task_def_name="greet")
        yield thread
    assert thread.errors == []


@pytest.fixture
def channel(fake: FakeLittleHorse) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(fake.address) as chan:
        yield chan


def test_worker_reports_success(fake, greet_worker):
    """A scheduled task runs in the real worker and its output is reported."""
    run_id = fake.schedule("greet", ["Ada"], wf_run_id="wf-1")
    report = fake.wait_report(run_id.task_guid, timeout_s=10)

    assert report.status == TaskStatus.TASK_SUCCESS
    assert report.output.str == "Hello, Ada!"
    assert report.attempt_number == 0
    assert report.task_run_id == run_id
    assert f"wf=wf-1 attempt=0 key={run_id.task_guid}" in report.log_output.str
    assert (run_id.task_guid, 0) in fake.delivered
    assert len(fake.registered_workers) == 1
    assert fake.heartbeats >= 1


def test_retry_attempt_is_reported_separately(fake, greet_worker):
    """A second attempt of the same TaskRun reaches the worker with its attempt number."""
    run_id = fake.schedule("greet", ["Ada"])
    fake.wait_report(run_id.task_guid, 0, timeout_s=10)
    fake.schedule(
        "greet",
        ["Bob"],
        wf_run_id=run_id.wf_run_id.id,
        task_guid=run_id.task_guid,
        attempt_number=1,
    )

    report = fake.wait_report(run_id.task_guid, 1, timeout_s=10)

    assert report.output.str == "Hello, Bob!"
    assert f"attempt=1 key={run_id.task_guid}" in report.log_output.str
    assert fake.delivered[(run_id.task_guid, 1)] >= fake.delivered[(run_id.task_guid, 0)]


def test_lh_task_exception_is_reported_as_task_exception(fake, greet_worker):
    """LHTaskException becomes TASK_EXCEPTION with its name, message and content."""
    run_id = fake.schedule("greet", ["boom"])
    report = fake.wait_report(run_id.task_guid, timeout_s=10)

    assert report.status == TaskStatus.TASK_EXCEPTION
    assert report.exception.name == "bad-thing"
    assert report.exception.message == "msg"
    assert extract_value(report.exception.content) == {"k": 1}
    assert not report.HasField("output")


def test_plain_exception_is_reported_as_task_failed(fake, greet_worker):
    """Any other exception becomes TASK_FAILED with a TASK_ERROR stack trace."""
    run_id = fake.schedule("greet", ["crash"])
    report = fake.wait_report(run_id.task_guid, timeout_s=10)

    assert report.status == TaskStatus.TASK_FAILED
    assert report.error.type == LHErrorType.TASK_ERROR
    assert "RuntimeError: plain failure" in report.error.message


def test_worker_polls_again_after_each_task(fake, greet_worker):
    """Several tasks queued at once are all delivered over the one stream."""
    run_ids = [fake.schedule("greet", [f"n{i}"]) for i in range(5)]

    outputs = [fake.wait_report(r.task_guid, timeout_s=10).output.str for r in run_ids]

    assert outputs == [f"Hello, n{i}!" for i in range(5)]
    fake.wait_polling(10, task_def_name="greet")
    assert fake.queued("greet") == 0
    assert fake.open_streams == 1


def test_put_task_def_is_idempotent_and_immutable(fake, config):
    """Re-registering the same TaskDef succeeds; a different one fails ALREADY_EXISTS."""
    littlehorse.create_task_def(greet, "greet", config)
    created_at = fake.task_defs["greet"].created_at
    littlehorse.create_task_def(greet, "greet", config)

    with pytest.raises(grpc.RpcError) as excinfo:
        littlehorse.create_task_def(shout_count, "greet", config)

    assert status(excinfo.value) == grpc.StatusCode.ALREADY_EXISTS
    task_def = fake.task_defs["greet"]
    assert task_def.created_at == created_at
    assert [v.name for v in task_def.input_vars] == ["name"]
    assert task_def.input_vars[0].type_def.primitive_type == VariableType.STR
    assert task_def.return_type.return_type.primitive_type == VariableType.STR


def test_put_task_def_rejects_invalid_name(config):
    """A TaskDef name that is not kebab-case is INVALID_ARGUMENT, as on the server."""
    with pytest.raises(grpc.RpcError) as excinfo:
        littlehorse.create_task_def(greet, "not_kebab", config)

    assert status(excinfo.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_get_task_def_not_found(fake, config, channel):
    """GetTaskDef of an unknown name is NOT_FOUND, and a worker for it fails to start."""
    with pytest.raises(grpc.RpcError) as excinfo:
        LittleHorseStub(channel).GetTaskDef(TaskDefId(name="nope"), timeout=5)
    assert status(excinfo.value) == grpc.StatusCode.NOT_FOUND

    thread = WorkerThread(LHTaskWorker(shout, "nope", config)).start()
    thread.stop()
    assert len(thread.errors) == 1
    assert isinstance(thread.errors[0], grpc.RpcError)
    assert status(thread.errors[0]) == grpc.StatusCode.NOT_FOUND
    assert fake.heartbeats == 0


def test_unimplemented_calls_abort(channel):
    """RPCs the fake does not implement abort UNIMPLEMENTED, naming the call."""
    with pytest.raises(grpc.RpcError) as excinfo:
        LittleHorseStub(channel).GetUserTaskRun(littlehorse.model.UserTaskRunId(), timeout=5)

    assert status(excinfo.value) == grpc.StatusCode.UNIMPLEMENTED
    assert "GetUserTaskRun" in details(excinfo.value)


def test_put_wf_spec_is_stored(fake, config, channel):
    """create_workflow_spec stores the request; GetWfSpec returns the spec."""

    def entrypoint(wf: WorkflowThread) -> None:
        wf.execute("greet", wf.declare_str("name"))

    littlehorse.create_task_def(greet, "greet", config)  # PutWfSpec checks its TaskDefs
    littlehorse.create_workflow_spec(Workflow("greeting", entrypoint), config)

    request = fake.wf_specs["greeting"]
    assert isinstance(request, PutWfSpecRequest)
    assert request.entrypoint_thread_name in request.thread_specs
    spec = LittleHorseStub(channel).GetWfSpec(WfSpecId(name="greeting"), timeout=5)
    assert spec.id.name == "greeting"
    assert spec.thread_specs == request.thread_specs


def test_checkpoints_are_replayed_on_retry(fake, config):
    """PutCheckpoint stores a value that GetCheckpoint replays to the next attempt."""
    computed: list[int] = []

    def compute(_checkpoint_ctx: object) -> int:
        computed.append(1)
        return 21

    async def checkpointed(seed: int, ctx: WorkerContext) -> int:
        value: int = await ctx.execute_and_checkpoint(compute)
        if ctx.attempt_number == 0:
            raise RuntimeError("fail after checkpoint")
        return value * seed

    littlehorse.create_task_def(checkpointed, "checkpointed", config)
    with WorkerThread(LHTaskWorker(checkpointed, "checkpointed", config)) as thread:
        run_id = fake.schedule("checkpointed", [2])
        assert fake.wait_report(run_id.task_guid, 0, 10).status == TaskStatus.TASK_FAILED
        fake.schedule(
            "checkpointed",
            [2],
            wf_run_id=run_id.wf_run_id.id,
            task_guid=run_id.task_guid,
            attempt_number=1,
        )
        report = fake.wait_report(run_id.task_guid, 1, 10)
    assert thread.errors == []

    assert report.status == TaskStatus.TASK_SUCCESS
    assert report.output.int == 42
    assert computed == [1]
    (checkpoint,) = fake.checkpoints[(run_id.wf_run_id.id, run_id.task_guid)]
    assert checkpoint.value.int == 21


@contextlib.contextmanager
def raw_poll_stream(channel: grpc.Channel, task_def_name: str) -> Iterator[Any]:
    """A PollTask stream opened by hand, with one PollTaskRequest outstanding."""
    requests: queue.Queue[PollTaskRequest | None] = queue.Queue()
    requests.put(PollTaskRequest(task_def_id=TaskDefId(name=task_def_name), client_id="raw"))
    responses = LittleHorseStub(channel).PollTask(iter(requests.get, None))
    try:
        yield responses
    finally:
        responses.cancel()
        requests.put(None)  # ends grpc's request-consuming thread


@pytest.mark.parametrize("how", ["client-cancels", "server-crashes"])
def test_dead_stream_does_not_swallow_tasks(fake, config, channel, how):
    """A PollTask stream that dies while waiting leaves later tasks queued for the next one."""
    littlehorse.create_task_def(greet, "greet", config)
    with raw_poll_stream(channel, "greet") as responses:
        fake.wait_polling(5)
        if how == "client-cancels":
            responses.cancel()
        else:
            assert fake.crash_streams() == 1
        with pytest.raises(grpc.RpcError) as excinfo:
            next(responses)
    assert status(excinfo.value) == grpc.StatusCode.CANCELLED
    fake.wait_for(lambda: fake.open_streams == 0 and fake.polls_waiting == 0, 5)

    run_id = fake.schedule("greet", ["Ada"])
    assert fake.queued("greet") == 1
    with raw_poll_stream(channel, "greet") as fresh:
        assert next(fresh).result.task_run_id == run_id
    assert fake.queued("greet") == 0


def test_task_taken_by_a_dying_stream_is_requeued(fake, config, channel):
    """A task whose stream dies before it is sent goes back to the queue for the worker."""
    littlehorse.create_task_def(greet, "greet", config)
    with raw_poll_stream(channel, "greet") as responses:
        fake.wait_polling(5)
        fake.drop_next_delivery()
        run_id = fake.schedule("greet", ["Ada"])
        with pytest.raises(grpc.RpcError) as excinfo:
            next(responses)
    assert status(excinfo.value) == grpc.StatusCode.CANCELLED
    fake.wait_for(lambda: fake.open_streams == 0, 5)
    assert fake.requeued == 1
    assert fake.queued("greet") == 1
    assert (run_id.task_guid, 0) not in fake.delivered

    with WorkerThread(LHTaskWorker(greet, "greet", config)) as thread:
        report = fake.wait_report(run_id.task_guid, 0, 10)
    assert thread.errors == []
    assert report.output.str == "Hello, Ada!"


def test_stop_frees_the_port():
    """A taken port cannot be shared, and after stop() nothing listens on it any more."""
    server = FakeLittleHorse().start()
    port = server.port
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    second = FakeLittleHorse()
    second.port = port
    with pytest.raises(OSError, match="could not bind"):
        second.start()
    server.stop()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@contextlib.contextmanager
def standalone(*args: str, stop: signal.Signals) -> Iterator[queue.Queue[str]]:
    """``python -m fakes.littlehorse ARGS``, its stdout lines queued; ``stop`` must exit it 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakes.littlehorse", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout

    def read_lines() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        proc.send_signal(stop)
        try:
            code = proc.wait(timeout=10)
        finally:
            proc.kill()  # a no-op once it exited; never leave it (or the reader) behind
            reader.join(timeout=5)
    assert code == 0


def test_standalone_server_runs_scheduled_tasks():
    """`python -m fakes.littlehorse` queues --schedule tasks, prints reports, exits on SIGINT."""
    config = LHConfig()
    with standalone("--port", "0", "--schedule", "greet", '["Ada"]', stop=signal.SIGINT) as lines:
        try:
            first = lines.get(timeout=10)
            assert first.startswith("fake LittleHorse listening on 127.0.0.1:")
            host, port = first.split()[-1].rsplit(":", 1)
            config.load(
                {
                    "LHC_API_HOST": host,
                    "LHC_API_PORT": port,
                    "LHC_API_PROTOCOL": "PLAINTEXT",
                    "LHW_NUM_WORKER_THREADS": "1",
                }
            )
            littlehorse.create_task_def(greet, "greet", config)
            with WorkerThread(LHTaskWorker(greet, "greet", config)):
                output = ""
                while "report " not in output:
                    output += lines.get(timeout=10)
            assert "scheduled greet task_guid=" in output
            assert '"status": "TASK_SUCCESS"' in output
            assert "Hello, Ada!" in output
        finally:
            close_sync_channels(config)
    assert lines.get_nowait() == "fake LittleHorse stopped\n"


# ---------------------------------------------------------------------- WfRuns

RELEASE = threading.Event()  # lets a "hang" attempt 0 of `generate` finish
BACKOFF = ExponentialBackoffRetryPolicy(base_interval_ms=1000, multiplier=2.0, max_delay_ms=60_000)


async def generate(workflow: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """Stand-in for the ComfyUI task: workflow["kind"] says how it behaves."""
    kind = workflow.get("kind", "ok")
    ctx.log(f"attempt={ctx.attempt_number}")
    if kind == "boom":
        raise LHTaskException("invalid-workflow", "bad graph", to_variable_value({"node": "3"}))
    if kind == "flaky" and ctx.attempt_number < workflow["fail_times"]:
        raise RuntimeError(f"flaky attempt {ctx.attempt_number}")
    if kind == "hang" and ctx.attempt_number == 0:
        await asyncio.to_thread(RELEASE.wait, 30)
    return {"kind": kind, "attempt": ctx.attempt_number}


def fail_with(name: str, message: str) -> Any:
    def handler(thread: WorkflowThread) -> None:
        thread.fail(name, message)

    return handler


def generate_wf(
    *,
    timeout_s: int = 60,
    retries: int = 3,
    backoff: ExponentialBackoffRetryPolicy | None = BACKOFF,
) -> Workflow:
    """The project's WfSpec shape (comfyui_worker/lh/wfspec.py) around the `generate` task."""

    def entrypoint(wf: WorkflowThread) -> None:
        workflow = wf.declare_json_obj("workflow").required()
        wf.declare_str("retry_of").searchable()
        result = wf.declare_json_obj("result")
        node = wf.execute(
            "generate",
            workflow,
            timeout_seconds=timeout_s,
            retries=retries,
            exponential_backoff=backoff,
        )
        result.assign(node)
        wf.handle_exception(
            node, fail_with("invalid-workflow", "fix the workflow"), "invalid-workflow"
        )
        wf.handle_error(
            node, fail_with("comfyui-unavailable", "check ComfyUI"), LHErrorType.TASK_ERROR
        )
        wf.complete(result)

    return Workflow("generate-wf", entrypoint)


@pytest.fixture(autouse=True)
def reset_release() -> Iterator[None]:
    RELEASE.clear()
    yield
    RELEASE.set()  # never leave a worker thread waiting


def register(config: LHConfig, workflow: Workflow | None = None) -> None:
    littlehorse.create_task_def(generate, "generate", config)
    littlehorse.create_workflow_spec(workflow or generate_wf(), config)


def run_wf(
    channel: grpc.Channel, wf_run_id: str, workflow: dict[str, Any], **variables: Any
) -> Any:
    values = {"workflow": to_variable_value(workflow)}
    values.update({k: to_variable_value(v) for k, v in variables.items()})
    request = RunWfRequest(wf_spec_name="generate-wf", id=wf_run_id, variables=values)
    return LittleHorseStub(channel).RunWf(request, timeout=5)


def task_node_run(channel: grpc.Channel, wf_run_id: str) -> Any:
    """The NodeRun of the WfRun's TASK node (entrypoint thread, position 1)."""
    node_run_id = NodeRunId(wf_run_id=WfRunId(id=wf_run_id), thread_run_number=0, position=1)
    return LittleHorseStub(channel).GetNodeRun(node_run_id, timeout=5)


def variable(channel: grpc.Channel, wf_run_id: str, name: str) -> VariableValue:
    """The value of an entrypoint variable, read with GetVariable."""
    variable_id = VariableId(wf_run_id=WfRunId(id=wf_run_id), thread_run_number=0, name=name)
    value: VariableValue = LittleHorseStub(channel).GetVariable(variable_id, timeout=5).value
    return value


def task_run_id(wf_run_id: str) -> TaskRunId:
    """The TaskRun of the WfRun's TASK node: guid "<thread>-<position>", as on the server."""
    return TaskRunId(wf_run_id=WfRunId(id=wf_run_id), task_guid="0-1")


class RawWorker:
    """A hand-driven worker: one PollTask stream plus plain unary calls."""

    def __init__(
        self, channel: grpc.Channel | None, task_def_name: str = "generate", *, stub: Any = None
    ) -> None:
        self.stub = stub if stub is not None else LittleHorseStub(channel)
        self.task_def_name = task_def_name
        self._requests: queue.Queue[PollTaskRequest | None] = queue.Queue()
        self._responses = self.stub.PollTask(iter(self._requests.get, None))

    def ask(self) -> None:
        """Send one PollTaskRequest."""
        self._requests.put(
            PollTaskRequest(task_def_id=TaskDefId(name=self.task_def_name), client_id="raw-worker")
        )

    def claim(self) -> ScheduledTask:
        """Ask for one task and wait for it."""
        self.ask()
        task: ScheduledTask = next(self._responses).result
        return task

    def next_error(self) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as excinfo:
            next(self._responses)
        return excinfo.value

    def checkpoint(self, task: ScheduledTask, value: Any, attempt: int | None = None) -> Any:
        request = PutCheckpointRequest(
            task_run_id=task.task_run_id,
            task_attempt=task.attempt_number if attempt is None else attempt,
            value=to_variable_value(value),
        )
        return self.stub.PutCheckpoint(request, timeout=5)

    def report(
        self, task: ScheduledTask, status: Any, *, time_ns: int | None = None, **result: Any
    ) -> None:
        report = ReportTaskRun(
            task_run_id=task.task_run_id,
            attempt_number=task.attempt_number,
            status=status,
            **result,
        )
        if time_ns is None:
            report.time.GetCurrentTime()
        else:
            report.time.FromNanoseconds(time_ns)
        self.stub.ReportTask(report, timeout=5)

    def close(self) -> None:
        self._responses.cancel()
        self._requests.put(None)


@pytest.fixture
def raw(channel: grpc.Channel) -> Iterator[RawWorker]:
    worker = RawWorker(channel)
    yield worker
    worker.close()


def test_wf_run_completes_with_the_task_output(fake, config, channel):
    """A WfRun runs its TASK node on the real worker and completes with the output as result."""
    register(config)
    with WorkerThread(LHTaskWorker(generate, "generate", config)) as thread:
        created = run_wf(channel, "ok-1", {"kind": "ok"})
        wf_run = fake.wait_wf_run("ok-1", timeout_s=10)
    assert thread.errors == []
    stub = LittleHorseStub(channel)

    assert created.status == LHStatus.RUNNING and created.id.id == "ok-1"
    assert wf_run.status == LHStatus.COMPLETED and wf_run.HasField("end_time")
    [entry] = wf_run.thread_runs
    assert entry.status == LHStatus.COMPLETED and entry.type == ThreadType.ENTRYPOINT
    assert json.loads(entry.output.json_obj) == {"kind": "ok", "attempt": 0}
    nodes = stub.ListNodeRuns(ListNodeRunsRequest(wf_run_id=WfRunId(id="ok-1")), timeout=5).results
    assert [n.WhichOneof("node_type") for n in nodes] == ["entrypoint", "task", "exit"]
    assert {n.status for n in nodes} == {LHStatus.COMPLETED}
    assert nodes[1].task.task_run_id == task_run_id("ok-1")
    task_run = stub.GetTaskRun(task_run_id("ok-1"), timeout=5)
    [attempt] = task_run.attempts
    assert task_run.status == attempt.status == TaskStatus.TASK_SUCCESS
    assert task_run.total_attempts == 4 and task_run.timeout_seconds == 60
    assert attempt.task_worker_id in fake.registered_workers
    assert "attempt=0" in attempt.log_output.str
    assert attempt.start_time.ToNanoseconds() <= attempt.end_time.ToNanoseconds()
    assert json.loads(variable(channel, "ok-1", "result").json_obj) == {"kind": "ok", "attempt": 0}


def test_business_exception_goes_to_its_failure_handler(fake, config, channel):
    """An LHTaskException is not retried; its handler thread fails the WfRun with EXCEPTION."""
    register(config)
    with WorkerThread(LHTaskWorker(generate, "generate", config)):
        run_wf(channel, "boom-1", {"kind": "boom"})
        wf_run = fake.wait_wf_run("boom-1", timeout_s=10)
    stub = LittleHorseStub(channel)

    assert wf_run.status == LHStatus.EXCEPTION
    entry, handler = wf_run.thread_runs
    assert entry.status == LHStatus.EXCEPTION and entry.error_message == "fix the workflow"
    assert handler.type == ThreadType.FAILURE_HANDLER and handler.status == LHStatus.EXCEPTION
    assert handler.parent_thread_id == 0 and handler.failure_being_handled.node_run_position == 1
    task_node = task_node_run(channel, "boom-1")
    [failure] = task_node.failures
    assert task_node.status == LHStatus.EXCEPTION and task_node.failure_handler_ids == [1]
    assert (failure.failure_name, failure.message) == ("invalid-workflow", "bad graph")
    assert json.loads(failure.content.json_obj) == {"node": "3"}
    assert failure.failure_handler_threadrun_id == 1 and not failure.was_properly_handled
    handler_nodes = stub.ListNodeRuns(
        ListNodeRunsRequest(wf_run_id=WfRunId(id="boom-1"), thread_run_number=1), timeout=5
    ).results
    assert handler_nodes[-1].failures[0].failure_name == "invalid-workflow"
    [attempt] = stub.GetTaskRun(task_run_id("boom-1"), timeout=5).attempts
    assert (
        attempt.status == TaskStatus.TASK_EXCEPTION and attempt.exception.name == "invalid-workflow"
    )


def test_task_failed_is_retried_with_backoff_until_it_succeeds(fake, config, channel):
    """TASK_FAILED attempts are retried after base*multiplier^n (scaled) and the WfRun completes."""
    fake.time_scale = 0.01  # backoff 1 s, 2 s -> 10 ms, 20 ms
    register(config)
    with WorkerThread(LHTaskWorker(generate, "generate", config)):
        run_wf(channel, "flaky-1", {"kind": "flaky", "fail_times": 2})
        wf_run = fake.wait_wf_run("flaky-1", timeout_s=10)

    assert wf_run.status == LHStatus.COMPLETED
    assert json.loads(wf_run.thread_runs[0].output.json_obj)["attempt"] == 2
    reports = [r for r in fake.reports if r.task_run_id == task_run_id("flaky-1")]
    assert [(r.attempt_number, r.status) for r in reports] == [
        (0, TaskStatus.TASK_FAILED),
        (1, TaskStatus.TASK_FAILED),
        (2, TaskStatus.TASK_SUCCESS),
    ]
    attempts = fake.task_run("0-1", wf_run_id="flaky-1").attempts
    assert [a.status for a in attempts] == [
        TaskStatus.TASK_FAILED,
        TaskStatus.TASK_FAILED,
        TaskStatus.TASK_SUCCESS,
    ]
    for number, delay_s in [(0, 0.01), (1, 0.02)]:
        gap_ns = (
            attempts[number + 1].schedule_time.ToNanoseconds()
            - attempts[number].end_time.ToNanoseconds()
        )
        assert gap_ns >= delay_s * 1e9
    assert "RuntimeError: flaky attempt 0" in attempts[0].error.message


def test_exhausted_retries_go_to_the_task_error_handler(fake, config, channel):
    """After 1 + retries TASK_FAILED attempts the TASK_ERROR handler fails the WfRun."""
    fake.time_scale = 0.001
    register(config, generate_wf(retries=1))
    with WorkerThread(LHTaskWorker(generate, "generate", config)):
        run_wf(channel, "down-1", {"kind": "flaky", "fail_times": 99})
        wf_run = fake.wait_wf_run("down-1", timeout_s=10)
    stub = LittleHorseStub(channel)

    assert wf_run.status == LHStatus.EXCEPTION
    assert wf_run.thread_runs[0].error_message == "check ComfyUI"
    task_node = task_node_run(channel, "down-1")
    assert task_node.status == LHStatus.ERROR
    assert (task_node.failures[0].failure_name, task_node.failures[0].message) == (
        "TASK_FAILURE",
        "Task execution failed",
    )
    assert len(stub.GetTaskRun(task_run_id("down-1"), timeout=5).attempts) == 2


def test_timed_out_attempt_is_retried_and_its_late_report_ignored(fake, channel):
    """An attempt past its timeout (counted from the claim) is TASK_TIMEOUT; its late result is dropped."""
    fake.time_scale = 0.5  # timeout_seconds=1 -> 0.5 s
    config = fake.config(LHW_NUM_WORKER_THREADS="2")
    register(config, generate_wf(timeout_s=1, retries=1, backoff=None))

    def timed_out() -> bool:
        attempts = fake.task_run("0-1", wf_run_id="slow-1").attempts
        return attempts[0].status == TaskStatus.TASK_TIMEOUT and len(attempts) == 2

    with WorkerThread(LHTaskWorker(generate, "generate", config)) as thread:
        run_wf(channel, "slow-1", {"kind": "hang"})
        fake.wait_for(timed_out, 10, "attempt 0 to time out")
        RELEASE.set()
        late = fake.wait_report("0-1", 0, timeout_s=10)
        wf_run = fake.wait_wf_run("slow-1", timeout_s=10)
    close_sync_channels(config)
    assert thread.errors == []

    assert late.status == TaskStatus.TASK_SUCCESS  # the worker did report it...
    first, second = fake.task_run("0-1", wf_run_id="slow-1").attempts
    assert first.status == TaskStatus.TASK_TIMEOUT  # ...but the server had moved on
    assert not first.HasField("output") and not first.HasField("log_output")
    assert first.end_time.ToNanoseconds() - first.start_time.ToNanoseconds() >= 0.5e9
    assert second.status == TaskStatus.TASK_SUCCESS
    assert wf_run.status == LHStatus.COMPLETED
    assert json.loads(wf_run.thread_runs[0].output.json_obj)["attempt"] == 1


def test_timeout_without_retries_is_caught_by_the_task_error_handler(fake, config, channel, raw):
    """TIMEOUT is a TASK_ERROR for handle_error: the handler runs once the only attempt expires."""
    fake.time_scale = 0.01
    register(config, generate_wf(timeout_s=1, retries=0))
    run_wf(channel, "late-1", {"kind": "ok"})
    task = raw.claim()

    wf_run = fake.wait_wf_run("late-1", timeout_s=10)

    assert task.attempt_number == 0
    assert (
        wf_run.status == LHStatus.EXCEPTION
        and wf_run.thread_runs[0].error_message == "check ComfyUI"
    )
    node = task_node_run(channel, "late-1")
    assert (node.failures[0].failure_name, node.failures[0].message) == (
        "TIMEOUT",
        "Task timed out",
    )


def test_stop_wf_run_halts_only_once_the_running_task_is_done(fake, config, channel, raw):
    """StopWfRun leaves the attempt running (checkpoints CONTINUE); the node halts after its report."""
    register(config)
    run_wf(channel, "stop-1", {"kind": "ok"})
    task = raw.claim()
    stub = raw.stub
    stub.StopWfRun(StopWfRunRequest(wf_run_id=WfRunId(id="stop-1")), timeout=5)

    wf_run = fake.wf_run("stop-1")
    assert wf_run is not None
    entry = wf_run.thread_runs[0]
    assert wf_run.status == LHStatus.RUNNING  # the server moves the WfRun only when halted at once
    assert entry.status == LHStatus.HALTING and entry.halt_reasons[0].HasField("manual_halt")
    assert task_node_run(channel, "stop-1").status == LHStatus.HALTING
    assert fake.task_run("0-1", wf_run_id="stop-1").status == TaskStatus.TASK_RUNNING
    going_on = raw.checkpoint(task, "halfway")
    assert going_on.flow_control_continue_type == PutCheckpointResponse.CONTINUE_TASK

    raw.report(task, TaskStatus.TASK_SUCCESS, output=to_variable_value({"done": True}))
    wf_run = fake.wf_run("stop-1")
    assert wf_run is not None
    assert wf_run.status == LHStatus.RUNNING and wf_run.thread_runs[0].status == LHStatus.HALTED
    assert task_node_run(channel, "stop-1").status == LHStatus.HALTED
    assert fake.task_run("0-1", wf_run_id="stop-1").status == TaskStatus.TASK_SUCCESS
    assert variable(channel, "stop-1", "result") == VariableValue()  # not assigned yet
    fenced = raw.checkpoint(task, "too late")
    assert fenced.flow_control_continue_type == PutCheckpointResponse.STOP_TASK

    stub.ResumeWfRun(ResumeWfRunRequest(wf_run_id=WfRunId(id="stop-1")), timeout=5)
    wf_run = fake.wait_wf_run("stop-1", timeout_s=5)
    assert wf_run.status == LHStatus.COMPLETED
    assert json.loads(wf_run.thread_runs[0].output.json_obj) == {"done": True}


def test_stop_and_resume_reject_unknown_runs_and_threads(fake, config, channel):
    """Stop/Resume of an unknown WfRun is NOT_FOUND; of a missing ThreadRun INVALID_ARGUMENT."""
    register(config)
    run_wf(channel, "s-1", {"kind": "ok"})
    stub = LittleHorseStub(channel)
    for call in (stub.StopWfRun, stub.ResumeWfRun):
        request_type = StopWfRunRequest if call is stub.StopWfRun else ResumeWfRunRequest
        with pytest.raises(grpc.RpcError) as missing:
            call(request_type(wf_run_id=WfRunId(id="nope")), timeout=5)
        with pytest.raises(grpc.RpcError) as no_thread:
            call(request_type(wf_run_id=WfRunId(id="s-1"), thread_run_number=3), timeout=5)
        assert status(missing.value) == grpc.StatusCode.NOT_FOUND
        assert status(no_thread.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_put_checkpoint_fences_attempts_that_are_not_current_and_running(
    fake, config, channel, raw
):
    """STOP_TASK for an older attempt and for a not-yet-claimed one; unknown TaskRun INVALID_ARGUMENT."""
    register(config, generate_wf(retries=1, backoff=None))
    run_wf(channel, "fence-1", {"kind": "ok"})
    first = raw.claim()
    assert fake.expire("0-1", wf_run_id="fence-1") is True
    assert fake.expire("0-1", 0, wf_run_id="fence-1") is False  # already timed out

    stale = raw.checkpoint(first, "stale")
    not_claimed = raw.checkpoint(first, "early", attempt=1)
    second = raw.claim()
    current = raw.checkpoint(second, "fresh")
    raw.report(first, TaskStatus.TASK_SUCCESS, output=to_variable_value({"late": True}))

    assert stale.flow_control_continue_type == PutCheckpointResponse.STOP_TASK
    assert not stale.HasField("created_checkpoint")
    assert not_claimed.flow_control_continue_type == PutCheckpointResponse.STOP_TASK
    assert second.attempt_number == 1
    assert current.flow_control_continue_type == PutCheckpointResponse.CONTINUE_TASK
    assert current.created_checkpoint.id.checkpoint_number == 0
    attempts = fake.task_run("0-1", wf_run_id="fence-1").attempts
    assert attempts[0].status == TaskStatus.TASK_TIMEOUT  # the late report was ignored
    assert attempts[1].status == TaskStatus.TASK_RUNNING
    with pytest.raises(grpc.RpcError) as excinfo:
        raw.checkpoint(ScheduledTask(task_run_id=task_run_id("nope")), "x")
    assert status(excinfo.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_redelivery_carries_the_checkpoints_observed_so_far(fake, config, channel, raw):
    """Checkpoints are numbered per TaskRun; a retry's ScheduledTask says how many exist."""
    register(config, generate_wf(retries=1, backoff=None))
    run_wf(channel, "ckpt-1", {"kind": "ok"})
    first = raw.claim()
    numbers = [raw.checkpoint(first, v).created_checkpoint.id.checkpoint_number for v in ("a", "b")]
    raw.report(
        first, TaskStatus.TASK_FAILED, error={"type": LHErrorType.TASK_ERROR, "message": "x"}
    )
    second = raw.claim()
    third = raw.checkpoint(second, "c")
    replayed = raw.stub.GetCheckpoint(
        CheckpointId(task_run=second.task_run_id, checkpoint_number=1), timeout=5
    )

    assert numbers == [0, 1]
    assert (first.total_observed_checkpoints, second.total_observed_checkpoints) == (0, 2)
    assert second.attempt_number == 1 and replayed.value.str == "b"
    assert third.created_checkpoint.id.checkpoint_number == 2
    assert fake.task_run("0-1", wf_run_id="ckpt-1").total_checkpoints == 3
    with pytest.raises(grpc.RpcError) as excinfo:
        raw.stub.GetCheckpoint(
            CheckpointId(task_run=second.task_run_id, checkpoint_number=3), timeout=5
        )
    assert status(excinfo.value) == grpc.StatusCode.NOT_FOUND


def test_bare_task_is_running_from_delivery_until_reported_or_expired(fake, config, channel, raw):
    """For schedule()d tasks: STOP_TASK before delivery and after expiry or timeout_s, CONTINUE between."""
    littlehorse.create_task_def(greet, "greet", config)
    raw.task_def_name = "greet"
    fake.time_scale = 0.01
    run_id = fake.schedule("greet", ["Ada"], timeout_s=1)
    early = raw.checkpoint(ScheduledTask(task_run_id=run_id), "early")
    task = raw.claim()
    during = raw.checkpoint(task, "during")
    fake.wait_for(
        lambda: fake.task_run(run_id.task_guid).status == TaskStatus.TASK_TIMEOUT, 10, "timeout"
    )
    after = raw.checkpoint(task, "after")

    retry = fake.schedule(
        "greet",
        ["Ada"],
        wf_run_id=run_id.wf_run_id.id,
        task_guid=run_id.task_guid,
        attempt_number=1,
    )
    second = raw.claim()
    assert fake.expire(retry.task_guid) is True
    raw.report(second, TaskStatus.TASK_SUCCESS, output=to_variable_value("late"))

    assert early.flow_control_continue_type == PutCheckpointResponse.STOP_TASK
    assert during.flow_control_continue_type == PutCheckpointResponse.CONTINUE_TASK
    assert after.flow_control_continue_type == PutCheckpointResponse.STOP_TASK
    assert second.total_observed_checkpoints == 1
    assert [a.status for a in fake.task_run(run_id.task_guid).attempts] == [
        TaskStatus.TASK_TIMEOUT,
        TaskStatus.TASK_TIMEOUT,
    ]
    assert fake.wait_report(run_id.task_guid, 1, timeout_s=1).output.str == "late"
    assert LittleHorseStub(channel).GetTaskRun(run_id, timeout=5).id == run_id


def test_run_wf_with_an_existing_id_is_already_exists(fake, config, channel):
    """A second RunWf with the same id fails ALREADY_EXISTS and leaves the first WfRun alone."""
    register(config)
    first = run_wf(channel, "dup-1", {"kind": "ok"})
    with pytest.raises(grpc.RpcError) as excinfo:
        run_wf(channel, "dup-1", {"kind": "boom"})

    assert status(excinfo.value) == grpc.StatusCode.ALREADY_EXISTS
    assert details(excinfo.value) == "WfRun with id dup-1 already exists!"
    assert fake.wf_run("dup-1") == first
    assert json.loads(variable(channel, "dup-1", "workflow").json_obj) == {"kind": "ok"}
    assert fake.queued("generate") == 1


@pytest.mark.parametrize(
    ("request_kwargs", "code", "message"),
    [
        (
            {"variables": {}},
            "INVALID_ARGUMENT",
            "Must provide required input variable workflow of type JSON_OBJ",
        ),
        (
            {"variables": {"workflow": VariableValue(str="x")}},
            "INVALID_ARGUMENT",
            "Value of type STR is not compatible with expected type JSON_OBJ",
        ),
        (
            {
                "variables": {
                    "workflow": VariableValue(json_obj="{}"),
                    "colour": VariableValue(str="red"),
                }
            },
            "INVALID_ARGUMENT",
            "Var colour provided but not needed",
        ),
        (
            {"id": "Not Valid!"},
            "INVALID_ARGUMENT",
            "Optional argument 'id' must be a valid hostname",
        ),
        ({"wf_spec_name": "missing"}, "NOT_FOUND", "Couldn't find specified WfSpec"),
        ({"wf_spec_name": ""}, "INVALID_ARGUMENT", "Missing required argument 'wf_spec_name'"),
    ],
)
def test_run_wf_validates_like_the_server(fake, config, channel, request_kwargs, code, message):
    """RunWf checks the WfSpec, the id, required variables, their types and unknown names."""
    register(config)
    fields: dict[str, Any] = {
        "wf_spec_name": "generate-wf",
        "variables": {"workflow": VariableValue(json_obj="{}")},
    }
    fields.update(request_kwargs)
    with pytest.raises(grpc.RpcError) as excinfo:
        LittleHorseStub(channel).RunWf(RunWfRequest(**fields), timeout=5)
    assert status(excinfo.value) == getattr(grpc.StatusCode, code)
    assert message in details(excinfo.value)
    assert fake.queued("generate") == 0  # nothing was started


def test_optional_variables_are_stored_and_unsupported_nodes_refused(fake, config, channel):
    """RunWf sets optional variables; a WfSpec with a node the fake cannot run is UNIMPLEMENTED."""
    register(config)
    run_wf(channel, "opt-1", {"kind": "ok"}, retry_of="wf-0")
    stub = LittleHorseStub(channel)
    retry_of = variable(channel, "opt-1", "retry_of")

    def sleepy(wf: WorkflowThread) -> None:
        wf.sleep(5)

    littlehorse.create_workflow_spec(Workflow("sleepy", sleepy), config)
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.RunWf(RunWfRequest(wf_spec_name="sleepy"), timeout=5)

    assert retry_of.str == "wf-0"
    assert status(excinfo.value) == grpc.StatusCode.UNIMPLEMENTED
    assert "SLEEP" in details(excinfo.value) and "'sleepy'" in details(excinfo.value)


def test_search_wf_run_filters_and_pages(fake, config, channel, raw):
    """SearchWfRun by WfSpec, status, start window and searchable variable, paged by limit+bookmark."""
    register(config)
    run_wf(channel, "s-1", {"kind": "ok"})
    raw.report(raw.claim(), TaskStatus.TASK_SUCCESS, output=to_variable_value({}))
    run_wf(channel, "s-2", {"kind": "ok"}, retry_of="s-1")
    run_wf(channel, "s-3", {"kind": "ok"})
    starts = {
        i: LittleHorseStub(channel).GetWfRun(WfRunId(id=i), timeout=5).start_time
        for i in ("s-1", "s-2", "s-3")
    }
    stub = raw.stub

    def search(**kwargs: Any) -> Any:
        return stub.SearchWfRun(SearchWfRunRequest(**kwargs), timeout=5)

    def ids(reply: Any) -> list[str]:
        return [r.id for r in reply.results]

    assert ids(search(wf_spec_name="generate-wf")) == ["s-1", "s-2", "s-3"]
    assert ids(search(wf_spec_name="generate-wf", status=LHStatus.COMPLETED)) == ["s-1"]
    assert ids(search(wf_spec_name="generate-wf", status=LHStatus.RUNNING)) == ["s-2", "s-3"]
    assert ids(search(wf_spec_name="generate-wf", earliest_start=starts["s-2"])) == ["s-2", "s-3"]
    assert ids(search(wf_spec_name="generate-wf", latest_start=starts["s-1"])) == ["s-1"]
    page = search(wf_spec_name="generate-wf", limit=2)
    assert ids(page) == ["s-1", "s-2"] and page.HasField("bookmark")
    rest = search(wf_spec_name="generate-wf", limit=2, bookmark=page.bookmark)
    assert ids(rest) == ["s-3"] and not rest.HasField("bookmark")
    match = VariableMatch(var_name="retry_of", value=VariableValue(str="s-1"))
    assert ids(search(wf_spec_name="generate-wf", variable_filters=[match])) == ["s-2"]
    assert ids(search(status=LHStatus.RUNNING)) == []  # no status-only index for WfRuns
    with pytest.raises(grpc.RpcError) as excinfo:
        search(wf_spec_name="unknown")
    assert status(excinfo.value) == grpc.StatusCode.INVALID_ARGUMENT
    scheduled = stub.SearchTaskRun(
        SearchTaskRunRequest(task_def_name="generate", status=TaskStatus.TASK_SCHEDULED), timeout=5
    )
    assert [r.wf_run_id.id for r in scheduled.results] == ["s-2", "s-3"]


def test_delete_wf_run_removes_it_with_its_task_runs_and_checkpoints(fake, config, channel, raw):
    """DeleteWfRun removes the WfRun, its TaskRuns and checkpoints; deleting again is OK."""
    register(config)
    run_wf(channel, "del-1", {"kind": "ok"})
    task = raw.claim()
    raw.checkpoint(task, "x")
    raw.report(task, TaskStatus.TASK_SUCCESS, output=to_variable_value({}))
    stub = raw.stub
    for _ in range(2):
        stub.DeleteWfRun(DeleteWfRunRequest(id=WfRunId(id="del-1")), timeout=5)

    with pytest.raises(grpc.RpcError) as excinfo:
        stub.GetWfRun(WfRunId(id="del-1"), timeout=5)
    assert status(excinfo.value) == grpc.StatusCode.NOT_FOUND
    assert (
        stub.ListTaskRuns(ListTaskRunsRequest(wf_run_id=WfRunId(id="del-1")), timeout=5).results
        == []
    )
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.GetCheckpoint(CheckpointId(task_run=task.task_run_id), timeout=5)
    assert status(excinfo.value) == grpc.StatusCode.NOT_FOUND


def test_kill_streams_ends_poll_streams_with_unavailable(fake, config, channel, raw):
    """kill_streams() ends open PollTask streams with UNAVAILABLE while the fake keeps serving."""
    littlehorse.create_task_def(greet, "greet", config)
    raw.task_def_name = "greet"
    raw.ask()
    fake.wait_polling(5, task_def_name="greet")

    assert fake.kill_streams() == 1
    error = raw.next_error()
    assert status(error) == grpc.StatusCode.UNAVAILABLE
    fake.wait_for(lambda: fake.open_streams == 0, 5, "the stream to close")

    run_id = fake.schedule("greet", ["Ada"])
    fresh = RawWorker(channel, "greet")
    try:
        assert fresh.claim().task_run_id == run_id
    finally:
        fresh.close()


def test_restart_keeps_the_port_and_every_record():
    """stop() makes RPCs UNAVAILABLE; start() serves the same port with TaskDefs, WfRuns and queue kept."""
    server = FakeLittleHorse(time_scale=0.01).start()
    port = server.port
    config = server.config()
    try:
        register(config, generate_wf(retries=1))
        with grpc.insecure_channel(server.address) as before:
            run_wf(before, "r-1", {"kind": "ok"})
            worker = RawWorker(before)
            first = worker.claim()
            worker.report(
                first,
                TaskStatus.TASK_FAILED,
                error={"type": LHErrorType.TASK_ERROR, "message": "x"},
            )
            worker.ask()
            server.stop()
            assert status(worker.next_error()) == grpc.StatusCode.UNAVAILABLE
            worker.close()
        with grpc.insecure_channel(server.address) as down, pytest.raises(grpc.RpcError) as excinfo:
            LittleHorseStub(down).GetWfRun(WfRunId(id="r-1"), timeout=5)
        assert status(excinfo.value) == grpc.StatusCode.UNAVAILABLE

        server.start()
        assert server.port == port
        with grpc.insecure_channel(server.address) as after:
            stub = LittleHorseStub(after)
            assert stub.GetTaskDef(TaskDefId(name="generate"), timeout=5).id.name == "generate"
            assert stub.GetWfRun(WfRunId(id="r-1"), timeout=5).status == LHStatus.RUNNING
            worker = RawWorker(after)
            second = worker.claim()  # the retry waited out its backoff while stopped
            worker.report(second, TaskStatus.TASK_SUCCESS, output=to_variable_value({"n": 2}))
            worker.close()
        wf_run = server.wait_wf_run("r-1", timeout_s=5)
    finally:
        close_sync_channels(config)
        server.stop()
    assert second.attempt_number == 1
    assert wf_run.status == LHStatus.COMPLETED


def test_standalone_server_runs_wf_runs():
    """`python -m fakes.littlehorse` serves RunWf and prints each WfRun status change."""
    config = LHConfig()
    with standalone("--port", "0", stop=signal.SIGTERM) as lines:
        try:
            first = lines.get(timeout=10)
            host, port = first.split()[-1].rsplit(":", 1)
            config.load(
                {"LHC_API_HOST": host, "LHC_API_PORT": port, "LHC_API_PROTOCOL": "PLAINTEXT"}
            )
            register(config)
            with (
                WorkerThread(LHTaskWorker(generate, "generate", config)),
                grpc.insecure_channel(f"{host}:{port}") as chan,
            ):
                run_wf(chan, "demo-1", {"kind": "ok"})
                output = ""
                while "wfrun demo-1 COMPLETED" not in output:
                    output += lines.get(timeout=10)
            assert "wfrun demo-1 RUNNING" in output and '"status": "TASK_SUCCESS"' in output
        finally:
            close_sync_channels(config)


# ------------------------------------------------- like the real server (1.2.1)
#
# The tests below take `either`: the fake (with the server's metadata read lag) and,
# marked slow, the session's real LittleHorse in a tenant of the test's own. The same
# assertions hold on both; reads poll because the real server's lag behind writes.


@dataclass
class Target:
    """One server under test: a stub and config for its tenant, and the fake if it is one."""

    kind: str
    config: LHConfig
    fake: FakeLittleHorse | None

    @property
    def stub(self) -> Any:
        return self.config.stub()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.slow)])
def either(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The fake with the server's metadata lag, or the real server 1.2.1 in a fresh tenant."""
    if request.param == "fake":
        with FakeLittleHorse(metadata_lag_s=SERVER_METADATA_LAG_S) as server:
            target = Target("fake", server.config(), server)
            yield target
            close_sync_channels(target.config)
        return
    real = request.getfixturevalue("real_lh")
    target = Target("real", real.config(LHC_TENANT_ID=new_tenant(real)), None)
    yield target
    close_sync_channels(target.config)


def wait_for(probe: Any, timeout_s: float, what: str) -> Any:
    """``probe()`` until it returns something truthy (polling: the real server has no push)."""
    deadline = time.monotonic() + timeout_s
    while not (found := probe()):
        assert time.monotonic() < deadline, f"{what}: not there within {timeout_s}s"
        time.sleep(0.02)
    return found


def new_tenant(real: Any) -> str:
    """A tenant of the test's own on the shared real server, ready when this returns."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    admin, scoped = real.config(), real.config(LHC_TENANT_ID=tenant)
    try:
        admin.stub().PutTenant(PutTenantRequest(id=tenant), timeout=10)
        probe = scoped.stub()
        # Ready once its reads answer: NOT_FOUND for a TaskDef nobody made.
        missing = TaskDefId(name="none")
        wait_for(
            lambda: (
                status(rpc_error(lambda: probe.GetTaskDef(missing))) == grpc.StatusCode.NOT_FOUND
            ),
            30,
            f"tenant {tenant}",
        )
    finally:
        close_sync_channels(admin)
        close_sync_channels(scoped)
    return tenant


def visible(call: Any) -> Any:
    """``call()``, or None while it is NOT_FOUND (a read not yet showing a write)."""
    try:
        return call()
    except grpc.RpcError as exc:
        if status(exc) == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def register_on(target: Target, workflow: Workflow | None = None) -> Any:
    """`generate` and a WfSpec on it, each waited for until reads see it; the WfSpec."""
    stub = target.stub
    littlehorse.create_task_def(generate, "generate", target.config)
    wait_for(lambda: visible(lambda: stub.GetTaskDef(TaskDefId(name="generate"))), 30, "TaskDef")
    spec = stub.PutWfSpec((workflow or generate_wf()).compile(), timeout=5)
    wait_for(lambda: visible(lambda: stub.GetWfSpec(spec.id)), 30, "WfSpec")
    return spec


def start(target: Target, wf_run_id: str, wf_spec: str = "generate-wf", **variables: Any) -> None:
    """RunWf with these VariableValues (``workflow`` defaults to ``{}``)."""
    values = {"workflow": VariableValue(json_obj="{}"), **variables}
    request = RunWfRequest(wf_spec_name=wf_spec, id=wf_run_id, variables=values)
    target.stub.RunWf(request, timeout=5)


def wait_task_run(target: Target, wf_run_id: str, check: Any = bool) -> Any:
    """GetTaskRun ``<wf_run_id>/0-1`` until it exists and ``check(task_run)`` holds."""

    def probe() -> Any:
        run = visible(lambda: target.stub.GetTaskRun(task_run_id(wf_run_id), timeout=5))
        return run if run is not None and check(run) else None

    return wait_for(probe, 30, f"TaskRun of {wf_run_id}")


def test_metadata_reads_lag_their_put(either):
    """GetTaskDef and GetWfSpec right after their Put are NOT_FOUND, then serve it."""
    stub = either.stub
    littlehorse.create_task_def(generate, "generate", either.config)
    with pytest.raises(grpc.RpcError) as task_def_read:
        stub.GetTaskDef(TaskDefId(name="generate"), timeout=5)
    wait_for(lambda: visible(lambda: stub.GetTaskDef(TaskDefId(name="generate"))), 30, "TaskDef")
    spec = stub.PutWfSpec(generate_wf().compile(), timeout=5)
    with pytest.raises(grpc.RpcError) as wf_spec_read:
        stub.GetWfSpec(spec.id, timeout=5)
    shown = wait_for(lambda: visible(lambda: stub.GetWfSpec(spec.id)), 30, "WfSpec")

    assert status(task_def_read.value) == grpc.StatusCode.NOT_FOUND
    assert details(task_def_read.value) == "Couldn't find TaskDef generate"
    assert status(wf_spec_read.value) == grpc.StatusCode.NOT_FOUND
    assert details(wf_spec_read.value) == "Couldn't find specified WfSpec"
    assert shown.id == spec.id


def test_metadata_lag_hides_a_put_from_every_read_for_metadata_lag_s():
    """With metadata_lag_s, Get*, RunWf, SearchWfRun and PutWfSpec's TaskDef check miss a fresh Put."""
    with FakeLittleHorse(metadata_lag_s=0.3) as fake, grpc.insecure_channel(fake.address) as chan:
        stub = LittleHorseStub(chan)
        config = fake.config()
        try:
            put_at = time.monotonic()
            littlehorse.create_task_def(generate, "generate", config)
            with pytest.raises(grpc.RpcError) as too_early:
                stub.PutWfSpec(generate_wf().compile(), timeout=5)
            fake.wait_task_def("generate", timeout_s=5)
            task_def_shown_after = time.monotonic() - put_at
            first = stub.PutWfSpec(generate_wf().compile(), timeout=5)
            run_early = rpc_error(lambda: run_wf(chan, "lag-1", {}))
            get_early = rpc_error(lambda: stub.GetWfSpec(first.id, timeout=5))
            latest_early = rpc_error(
                lambda: stub.GetLatestWfSpec(GetLatestWfSpecRequest(name="generate-wf"))
            )
            search_early = rpc_error(
                lambda: stub.SearchWfRun(SearchWfRunRequest(wf_spec_name="generate-wf"))
            )
            wait_for(lambda: visible(lambda: stub.GetWfSpec(first.id)), 5, "revision 0")
            second = stub.PutWfSpec(generate_wf(retries=1).compile(), timeout=5)
            latest_then = stub.GetLatestWfSpec(GetLatestWfSpecRequest(name="generate-wf"))
            old_run = run_wf(chan, "lag-2", {})
            wait_for(lambda: visible(lambda: stub.GetWfSpec(second.id)), 5, "revision 1")
            new_run = run_wf(chan, "lag-3", {})
            bare = fake.schedule("generate", [{}])  # the test API sees everything at once
        finally:
            close_sync_channels(config)

    assert status(too_early.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert details(too_early.value) == (
        "PutWfSpecRequest is invalid: ThreadSpec entrypoint invalid: "
        "Node 1-generate-TASK invalid: Refers to nonexistent TaskDef generate"
    )
    assert task_def_shown_after >= 0.3
    assert (status(run_early), details(run_early)) == (
        grpc.StatusCode.NOT_FOUND,
        "Couldn't find specified WfSpec",
    )
    assert status(get_early) == status(latest_early) == grpc.StatusCode.NOT_FOUND
    assert status(search_early) == grpc.StatusCode.INVALID_ARGUMENT
    assert (first.id.revision, second.id.revision) == (0, 1)
    assert latest_then.id.revision == 0 and old_run.wf_spec_id.revision == 0
    assert new_run.wf_spec_id.revision == 1
    assert bare.task_guid


def rpc_error(call: Any) -> grpc.RpcError:
    """The error ``call()`` fails with."""
    with pytest.raises(grpc.RpcError) as excinfo:
        call()
    return excinfo.value


def test_metadata_lag_defaults_to_zero_or_the_environment(monkeypatch):
    """metadata_lag_s is 0 unless FAKE_LH_METADATA_LAG_S (or the keyword) says otherwise."""
    monkeypatch.delenv("FAKE_LH_METADATA_LAG_S", raising=False)
    plain = FakeLittleHorse().metadata_lag_s
    monkeypatch.setenv("FAKE_LH_METADATA_LAG_S", "0.25")
    from_env = FakeLittleHorse().metadata_lag_s
    given = FakeLittleHorse(metadata_lag_s=0.0).metadata_lag_s

    assert (plain, from_env, given) == (0.0, SERVER_METADATA_LAG_S, 0.0)


def test_deleting_a_wf_run_with_a_queued_task_ends_the_stream_that_claims_it(either):
    """The deleted WfRun's task stays queued; claiming it ends the PollTask stream UNAVAILABLE."""
    register_on(either)
    start(either, "del-q")
    wait_task_run(either, "del-q")
    either.stub.DeleteWfRun(DeleteWfRunRequest(id=WfRunId(id="del-q")), timeout=5)
    wait_for(
        lambda: (
            True if visible(lambda: either.stub.GetWfRun(WfRunId(id="del-q"))) is None else None
        ),
        30,
        "the WfRun to be deleted",
    )
    first = RawWorker(None, stub=either.stub)
    try:
        first.ask()
        error = first.next_error()
    finally:
        first.close()
    second = RawWorker(None, stub=either.stub)
    try:
        start(either, "del-after")
        claimed = second.claim()
    finally:
        second.close()

    assert status(error) == grpc.StatusCode.UNAVAILABLE
    assert details(error) == (
        "Task claim for TaskRun del-q/0-1 could not be processed in time. "
        "The task will likely time out."
    )
    assert claimed.task_run_id == task_run_id("del-after")  # the orphan was used up


GSON_IN = (
    '{"b": 2, "a": [1, 2.0, 1e2, 1.5E-7, 12345678.9, "<&>=\'\\u00e9\\u2028\\n\\u0001/",'
    ' null, true], "big": 12345678901234567890, "neg": -0, "f": 0.1, "e": {}}'
)
GSON_OUT = (
    '{"b":2,"a":[1,2.0,100.0,1.5E-7,1.23456789E7,'
    '"\\u003c\\u0026\\u003e\\u003d\\u0027\u00e9\\u2028\\n\\u0001/",null,true],'
    '"big":1.2345678901234567E19,"neg":0,"f":0.1,"e":{}}'
)


def json_wf() -> Workflow:
    """`generate` on a JSON input, with more JSON variables and its output assigned."""

    def entrypoint(wf: WorkflowThread) -> None:
        workflow = wf.declare_json_obj("workflow").required()
        for name in ("dup", "listed", "nan", "nothing"):
            wf.declare_json_obj(name)
        wf.declare_json_arr("arr")
        result = wf.declare_json_obj("result")
        result.assign(wf.execute("generate", workflow))

    return Workflow("json-wf", entrypoint)


def test_json_values_are_stored_compactly(either):
    """JSON_OBJ/JSON_ARR values come back as Gson re-serializes them; unparsable ones as sent."""
    register_on(either, json_wf())
    stub = either.stub
    start(
        either,
        "json-1",
        "json-wf",
        workflow=VariableValue(json_obj=GSON_IN),
        arr=VariableValue(json_arr='[ {"z": 1, "y": [ ]} ]'),
        dup=VariableValue(json_obj='{"a":1,"a":2}'),
        listed=VariableValue(json_obj="[1]"),
        nan=VariableValue(json_obj='{"a": NaN}'),
        nothing=VariableValue(json_obj="null"),
    )
    worker = RawWorker(None, stub=stub)
    try:
        task = worker.claim()
        checkpoint = worker.checkpoint(task, {"c": [1, 2]})
        worker.report(task, TaskStatus.TASK_SUCCESS, output=VariableValue(json_obj='{"o": 1}'))
        start(either, "json-2", "json-wf", workflow=VariableValue(json_obj='{"k": 1}'))
        failing = worker.claim()
        content = VariableValue(json_obj='{"e": [1]}')
        worker.report(
            failing, TaskStatus.TASK_EXCEPTION, exception={"name": "bad", "content": content}
        )
    finally:
        worker.close()
    done = wait_task_run(either, "json-1", lambda r: r.status == TaskStatus.TASK_SUCCESS)
    failed = wait_task_run(either, "json-2", lambda r: r.status == TaskStatus.TASK_EXCEPTION)

    def failed_node() -> Any:
        node = task_node_run_on(either, "json-2")
        return node if node.failures else None

    node = wait_for(failed_node, 30, "the NodeRun's failure")
    wait_for(lambda: variable_on(either, "json-1", "result").WhichOneof("value"), 30, "result")
    stored_checkpoint = stub.GetCheckpoint(
        CheckpointId(task_run=task.task_run_id, checkpoint_number=0), timeout=5
    )
    stored = {
        name: variable_on(either, "json-1", name)
        for name in ("workflow", "arr", "dup", "listed", "nan", "nothing", "result")
    }

    assert task.variables[0].value.json_obj == GSON_OUT
    assert done.input_variables[0].value.json_obj == GSON_OUT
    assert checkpoint.created_checkpoint.value.json_obj == '{"c":[1,2]}'
    assert stored_checkpoint.value.json_obj == '{"c":[1,2]}'
    assert done.attempts[0].output.json_obj == '{"o":1}'
    assert failed.attempts[0].exception.content.json_obj == '{"e":[1]}'
    assert node.failures[0].content.json_obj == '{"e":[1]}'
    assert stored["workflow"].json_obj == GSON_OUT
    assert stored["arr"].json_arr == '[{"z":1,"y":[]}]'
    assert stored["dup"].json_obj == '{"a":1,"a":2}'  # Gson refuses duplicate keys
    assert stored["listed"].json_obj == "[1]"  # not an object: kept as sent
    assert stored["nan"].json_obj == '{"a":"NaN"}'  # Gson reads NaN as a string
    assert stored["nothing"].WhichOneof("value") is None  # "null" is LittleHorse's null
    assert stored["result"].json_obj == '{"o":1}'


def task_node_run_on(target: Target, wf_run_id: str) -> Any:
    node_run_id = NodeRunId(wf_run_id=WfRunId(id=wf_run_id), thread_run_number=0, position=1)
    return wait_for(lambda: visible(lambda: target.stub.GetNodeRun(node_run_id)), 30, "NodeRun")


def variable_on(target: Target, wf_run_id: str, name: str) -> VariableValue:
    variable_id = VariableId(wf_run_id=WfRunId(id=wf_run_id), thread_run_number=0, name=name)
    found = wait_for(lambda: visible(lambda: target.stub.GetVariable(variable_id)), 30, name)
    value: VariableValue = found.value
    return value


def test_task_run_source_carries_no_wf_spec_id(either):
    """ScheduledTask.source and TaskRun.source name the NodeRun but not the WfSpec, as 1.2.1."""
    register_on(either)
    worker = RawWorker(None, stub=either.stub)
    try:
        start(either, "src-1")
        task = worker.claim()
    finally:
        worker.close()
    task_run = wait_task_run(either, "src-1")
    node_run_id = NodeRunId(wf_run_id=WfRunId(id="src-1"), thread_run_number=0, position=1)

    for source in (task.source, task_run.source):
        assert not source.HasField("wf_spec_id")
        assert source.task_node.node_run_id == node_run_id


def test_timestamps_have_millisecond_precision(either):
    """Every timestamp served is whole milliseconds, a worker's report time included."""
    register_on(either)
    reported_ns = 1_796_000_000_123_456_789
    worker = RawWorker(None, stub=either.stub)
    try:
        start(either, "ms-1")
        task = worker.claim()
        checkpoint = worker.checkpoint(task, "c").created_checkpoint
        worker.report(
            task, TaskStatus.TASK_SUCCESS, output=to_variable_value({}), time_ns=reported_ns
        )
    finally:
        worker.close()
    task_run = wait_task_run(either, "ms-1", lambda r: r.status == TaskStatus.TASK_SUCCESS)
    wf_run = either.stub.GetWfRun(WfRunId(id="ms-1"), timeout=5)
    [attempt] = task_run.attempts
    variable_id = VariableId(wf_run_id=WfRunId(id="ms-1"), thread_run_number=0, name="workflow")
    stamps = {
        "ScheduledTask.created_at": task.created_at,
        "Checkpoint.created_at": checkpoint.created_at,
        "TaskRun.scheduled_at": task_run.scheduled_at,
        "schedule_time": attempt.schedule_time,
        "start_time": attempt.start_time,
        "end_time": attempt.end_time,
        "WfRun.start_time": wf_run.start_time,
        "ThreadRun.start_time": wf_run.thread_runs[0].start_time,
        "NodeRun.arrival_time": task_node_run_on(either, "ms-1").arrival_time,
        "Variable.created_at": either.stub.GetVariable(variable_id, timeout=5).created_at,
    }

    assert {name: s.nanos % 1_000_000 for name, s in stamps.items()} == dict.fromkeys(stamps, 0)
    assert attempt.end_time.ToNanoseconds() == reported_ns // 1_000_000 * 1_000_000


def test_search_wf_run_like_the_1_2_1_server(either):
    """Filters match unsearchable variables; no name finds nothing; limit 0 and <0; null versions."""
    register_on(either)
    start(either, "find-1", workflow=VariableValue(json_obj='{"k": 1}'))
    stub = either.stub

    def search(**kwargs: Any) -> Any:
        return stub.SearchWfRun(SearchWfRunRequest(**kwargs), timeout=5)

    def on_workflow(json_obj: str) -> list[Any]:
        match = VariableMatch(var_name="workflow", value=VariableValue(json_obj=json_obj))
        return [search(wf_spec_name="generate-wf", variable_filters=[match])]

    # "workflow" is not searchable; the filter value is compared after compacting it.
    found = wait_for(lambda: on_workflow('{"k":  1}')[0].results or None, 30, "the WfRun")
    wait_task_run(either, "find-1")
    other = on_workflow('{"k": 2}')[0]
    nameless = [search(), search(earliest_start={"seconds": 1}), search(limit=5)]
    none_left = search(wf_spec_name="generate-wf", limit=0)
    none_match = search(wf_spec_name="generate-wf", limit=0, status=LHStatus.ERROR)
    negative = rpc_error(lambda: search(wf_spec_name="generate-wf", limit=-1))
    unknown = rpc_error(lambda: search(wf_spec_name="nope"))
    unknown_major = rpc_error(lambda: search(wf_spec_name="nope", wf_spec_major_version=0))
    tasks = stub.SearchTaskRun(SearchTaskRunRequest(task_def_name="generate", limit=0), timeout=5)
    listed = [
        stub.ListVariables(ListVariablesRequest(wf_run_id=WfRunId(id="find-1"), limit=n))
        for n in (0, -1)
    ]

    assert [r.id for r in found] == ["find-1"] and other.results == []
    assert [(list(r.results), r.HasField("bookmark")) for r in nameless] == [([], False)] * 3
    assert none_left.results == [] and none_left.HasField("bookmark")
    assert none_match.results == [] and not none_match.HasField("bookmark")
    assert (status(negative), details(negative)) == (
        grpc.StatusCode.INTERNAL,
        "Unexpected internal failure: WTF?",
    )
    assert details(unknown) == "Couldn't find wfSpec nope null null"
    assert details(unknown_major) == "Couldn't find wfSpec nope 0 null"
    assert status(unknown) == grpc.StatusCode.INVALID_ARGUMENT
    assert tasks.results == [] and tasks.HasField("bookmark")
    assert [(list(r.results), r.HasField("bookmark")) for r in listed] == [([], True)] * 2


def test_a_limit_0_bookmark_pages_from_the_start(fake, config, channel):
    """The fake's bookmark after a limit-0 page continues with the first result."""
    register(config)
    for n in (1, 2):
        run_wf(channel, f"page-{n}", {})
    stub = LittleHorseStub(channel)
    empty = stub.SearchWfRun(SearchWfRunRequest(wf_spec_name="generate-wf", limit=0), timeout=5)
    rest = stub.SearchWfRun(
        SearchWfRunRequest(wf_spec_name="generate-wf", limit=1, bookmark=empty.bookmark),
        timeout=5,
    )

    assert [r.id for r in rest.results] == ["page-1"] and rest.HasField("bookmark")
