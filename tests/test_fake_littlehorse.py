"""The fake LittleHorse server, driven by the real littlehorse-client SDK."""

# grpc and the generated LittleHorse stubs ship no type hints.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import littlehorse
import pytest
from littlehorse.config import LHConfig
from littlehorse.exceptions import LHTaskException
from littlehorse.model import (
    LHErrorType,
    LittleHorseStub,
    PollTaskRequest,
    PutWfSpecRequest,
    TaskDefId,
    TaskStatus,
    VariableType,
    WfSpecId,
)
from littlehorse.utils import extract_value, to_variable_value
from littlehorse.worker import LHTaskWorker, WorkerContext
from littlehorse.workflow import Workflow, WorkflowThread

from tests.fakes.littlehorse import FakeLittleHorse, WorkerThread, close_sync_channels

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
    """RPCs outside the worker's needs abort UNIMPLEMENTED."""
    with pytest.raises(grpc.RpcError) as excinfo:
        LittleHorseStub(channel).GetWfRun(littlehorse.model.WfRunId(id="x"), timeout=5)

    assert status(excinfo.value) == grpc.StatusCode.UNIMPLEMENTED


def test_put_wf_spec_is_stored(fake, config, channel):
    """create_workflow_spec stores the request; GetWfSpec returns the spec."""

    def entrypoint(wf: WorkflowThread) -> None:
        wf.execute("greet", wf.declare_str("name"))

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


def test_standalone_server_runs_scheduled_tasks():
    """`python -m tests.fakes.littlehorse` queues --schedule tasks, prints reports, exits on SIGINT."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.littlehorse",
            "--port",
            "0",
            "--schedule",
            "greet",
            '["Ada"]',
        ],
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

    reader = threading.Thread(target=read_lines)
    reader.start()
    config = LHConfig()
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
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        reader.join(timeout=5)
    assert lines.get_nowait() == "fake LittleHorse stopped\n"
