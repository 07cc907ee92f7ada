"""The real ``main.py worker`` subprocess against a fake LittleHorse and a fake ComfyUI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from littlehorse import to_variable_value
from littlehorse.model import ReportTaskRun, TaskStatus

from comfyui_worker.settings import MAX_PREFETCH
from comfyui_worker.worker.task import prompt_id_for
from fakes.comfyui import FakeComfyUI
from fakes.littlehorse import FakeLittleHorse
from fakes.processes import start_worker
from tests import ROOT
from tests.conftest import prompt_of, wait_until
from tests.graphs import smoke
from tests.modelserver import ModelServer

# The real `main.py worker` subprocess: end to end, seconds each.
pytestmark = pytest.mark.slow

TASK = "execute-comfyui-workflow"


def report_retried_s(logs: str) -> float:
    """The longest ``waited_s`` of the worker's ``lh.report_retry`` lines (0 if none)."""
    waited = [0.0]
    for line in logs.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "lh.report_retry":
                waited.append(float(event["waited_s"]))
    return max(waited)


class WorkerProcess:
    """``main.py worker`` as a child process, with its stderr kept for diagnosis."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = start_worker(env, self._log)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self._log.close()
        return code


@pytest.fixture
def lh() -> Iterator[FakeLittleHorse]:
    with FakeLittleHorse() as fake:
        yield fake


@pytest.fixture
def worker_env(lh: FakeLittleHorse, comfy: FakeComfyUI, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        **lh.env(),
        "COMFYUI_BASE_URL": comfy.base_url,
        "COMFYUI_OUTPUT_DIR": str(tmp_path / "out"),
        "COMFYUI_POLL_INTERVAL_SEC": "0.2",
        "COMFYUI_HISTORY_TIMEOUT_SEC": "30",
        "COMFYUI_MAX_OUTPUT_BYTES": "1000000",
        "COMFYUI_WORKFLOWS_DIR": str(ROOT / "workflows"),
        "WORKER_HTTP_PORT": "0",
        "WORKER_LOG_FORMAT": "json",
        "WORKER_DRAIN_TIMEOUT_SEC": "20",
    }


@pytest.fixture
def spawn(lh: FakeLittleHorse, worker_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **env}, tmp_path / f"worker{len(started)}.log")
        started.append(worker)
        lh.wait_polling(timeout_s=30)
        return worker

    yield start
    for worker in started:
        worker.stop()


def run_task(
    lh: FakeLittleHorse,
    workflow: Any,
    *,
    guid: str | None = None,
    attempt: int = 0,
    wf_run_id: str = "wf1",
) -> ReportTaskRun:
    guid = guid or uuid.uuid4().hex
    lh.schedule(TASK, [workflow], wf_run_id=wf_run_id, task_guid=guid, attempt_number=attempt)
    return lh.wait_report(guid, attempt, timeout_s=60)


def exception_content(report: ReportTaskRun) -> dict[str, Any]:
    assert report.status == TaskStatus.TASK_EXCEPTION, report
    content: dict[str, Any] = json.loads(report.exception.content.json_obj)
    return content


def test_success_reports_the_result_and_saves_files(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI, tmp_path: Path
):
    """A graph task succeeds, with no adoption look first; files land under wf_run_id/guid."""
    comfy.execution_time_s = 0.3  # events arrive before completion, as on a real GPU
    spawn()
    guid = uuid.uuid4().hex
    report = run_task(lh, smoke(1), guid=guid, wf_run_id="wf-success")
    assert report.status == TaskStatus.TASK_SUCCESS, report
    result = json.loads(report.output.json_obj)
    assert result["prompt_id"] == prompt_of(lh, "wf-success", guid, 0) == comfy.submitted[0]
    [out] = result["outputs"]
    assert Path(out["path"]).is_file() and Path(out["path"]).is_relative_to(
        tmp_path / "out" / "wf-success" / guid
    )
    log = report.log_output.str
    assert "submitted prompt" in log and "ComfyUI started executing" in log
    assert "downloaded 1 files" in log and "finished: comfyui executed in" in log
    assert lh.task_defs[TASK].input_vars[0].name == "workflow"
    before_post = comfy.requests[: comfy.requests.index(("POST", "/prompt"))]
    looked = [p for _, p in before_post if p == "/queue" or p.startswith("/history")]
    assert looked == []  # a first attempt has no earlier prompt to look for


@pytest.mark.parametrize(
    ("workflow", "name", "field", "value"),
    [
        ({"nodes": [], "links": []}, "invalid-workflow", "error", "invalid-workflow"),
        ({"template": "no_such_template"}, "invalid-workflow", "error", "invalid-workflow"),
        (
            {
                **smoke(2),
                "3": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["2", 0], "filename_prefix": "../../escape"},
                },
            },
            "execution-failed",
            "node_id",
            "3",
        ),
        (
            {
                "1": {
                    "class_type": "FakeBigOutput",
                    "inputs": {"size_bytes": 2_000_000, "filename_prefix": "big"},
                }
            },
            "output-rejected",
            "node_id",
            "1",
        ),
    ],
    ids=["ui-format", "unknown-template", "node-raised", "over-size-cap"],
)
def test_business_failures_are_task_exceptions(
    lh: FakeLittleHorse, spawn: Any, workflow: Any, name: str, field: str, value: str
):
    """Each business failure is an LHTaskException with its kebab name and a JSON content."""
    spawn()
    report = run_task(lh, workflow)
    assert report.exception.name == name
    assert exception_content(report)[field] == value


def test_out_of_memory_is_task_failed(lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI):
    """A technical failure is TASK_FAILED (retried by the WfSpec), with a readable message."""
    comfy.fail_node(
        "ImageBlur", exception_type="torch.OutOfMemoryError", message="Allocation on device"
    )
    spawn()
    report = run_task(lh, smoke(3))
    assert report.status == TaskStatus.TASK_FAILED
    assert report.error.message.startswith("comfyui-out-of-memory: ComfyUI ran out of memory")
    assert "Traceback" not in report.error.message and ".venv" not in report.error.message


def test_no_task_is_taken_while_comfyui_is_down(
    lh: FakeLittleHorse, worker_env: dict[str, str], comfy: FakeComfyUI, tmp_path: Path
):
    """With ComfyUI down the worker claims nothing and says why; once it is back, work flows."""
    comfy.stop_http(forget=False)
    port = free_port()
    env = {**worker_env, "WORKER_HTTP_PORT": str(port), "WORKER_HTTP_HOST": "127.0.0.1"}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        lh.wait_task_def(TASK)
        guid = uuid.uuid4().hex
        lh.schedule(TASK, [smoke(4)], task_guid=guid)

        wait_until(lambda: readyz(port).get("comfyui", "ok") != "ok", timeout_s=30)
        assert lh.queued(TASK) == 1 and (guid, 0) not in lh.delivered
        comfy.start_http()
        assert lh.wait_report(guid, timeout_s=60).status == TaskStatus.TASK_SUCCESS
    finally:
        worker.stop()


def test_bad_task_then_good_task(lh: FakeLittleHorse, spawn: Any):
    """A garbage input is reported and the next task runs normally on the same process."""
    worker = spawn()
    bad = run_task(lh, {"1": "not a node"})
    assert bad.exception.name == "invalid-workflow"
    good = run_task(lh, smoke(5))
    assert good.status == TaskStatus.TASK_SUCCESS
    assert worker.proc.poll() is None


def test_retry_after_a_crash_never_runs_the_graph_twice(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI
):
    """Kill -9 mid-execution, redeliver as attempt 1: ComfyUI executes the graph exactly once."""
    comfy.execution_time_s = 2.0
    first = spawn()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(6)], wf_run_id="wf-crash", task_guid=guid, attempt_number=0)
    wait_until(lambda: comfy.submitted, timeout_s=20)
    first.stop(signal.SIGKILL)
    spawn()
    report = run_task(lh, smoke(6), guid=guid, attempt=1, wf_run_id="wf-crash")
    assert report.status == TaskStatus.TASK_SUCCESS, report
    assert comfy.submitted == [prompt_of(lh, "wf-crash", guid, 0)]
    assert comfy.executed == comfy.submitted
    assert json.loads(report.output.json_obj)["prompt_id"] == comfy.submitted[0]


def test_sigterm_drains_the_running_task_then_exits_zero(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI
):
    """SIGTERM lets the execution in flight finish and be reported, then the process exits 0."""
    comfy.execution_time_s = 1.5
    worker = spawn()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(7)], task_guid=guid, wf_run_id="wf-term")
    wait_until(lambda: prompt_of(lh, "wf-term", guid, 0) in comfy.submitted)
    assert worker.stop(signal.SIGTERM) == 0, worker.logs()
    report = lh.wait_report(guid, timeout_s=5)
    assert report.status == TaskStatus.TASK_SUCCESS


def test_drain_past_grace_interrupts_and_reports_retryable(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI
):
    """Past WORKER_DRAIN_TIMEOUT_SEC the prompt is interrupted and the task reported as retryable."""
    comfy.execution_time_s = 6  # 2 s per node: the interrupt lands at the next node boundary
    worker = spawn(WORKER_DRAIN_TIMEOUT_SEC="0.5")
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(8)], task_guid=guid, wf_run_id="wf-drain")
    wait_until(lambda: prompt_of(lh, "wf-drain", guid, 0) in comfy.submitted)
    assert worker.stop(signal.SIGTERM) == 0, worker.logs()
    report = lh.wait_report(guid, timeout_s=5)
    assert (
        report.status == TaskStatus.TASK_FAILED and "worker-shutting-down" in report.error.message
    )
    wait_until(lambda: prompt_of(lh, "wf-drain", guid, 0) in comfy.interrupted, timeout_s=5)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_health_endpoints_reflect_comfyui_and_count_tasks(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI
):
    """The worker's /readyz follows ComfyUI and /metrics counts the task it ran."""
    import httpx

    port = free_port()
    spawn(WORKER_HTTP_PORT=str(port), WORKER_HTTP_HOST="127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    assert run_task(lh, smoke(9)).status == TaskStatus.TASK_SUCCESS
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").json() == {
        "warmup": "ok",
        "comfyui": "ok",
        "output": "ok",
        "littlehorse": "ok",
    }
    metrics = httpx.get(f"{base}/metrics").text
    assert 'comfyui_worker_tasks_total{kind="success",outcome="success"} 1.0' in metrics
    comfy.stop()
    wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 503)  # cached for 2 s
    assert httpx.get(f"{base}/readyz").json()["comfyui"] != "ok"


def test_sigterm_hands_back_the_waiting_and_parked_tasks_at_once(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI
):
    """Tasks claimed but not submitted (one waiting its turn, one parked) go back at once."""
    comfy.execution_time_s = 6
    worker = spawn()
    running, waiting, parked = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    for n, guid in enumerate((running, waiting, parked)):
        lh.schedule(TASK, [smoke(10 + n)], task_guid=guid)
        lh.wait_delivered(guid)  # one prompt at a time, yet the SDK claims three tasks
    worker.proc.send_signal(signal.SIGTERM)
    for guid in (waiting, parked):
        handed_back = lh.wait_report(guid, timeout_s=10)
        assert (
            handed_back.status == TaskStatus.TASK_FAILED
            and "worker-shutting-down" in handed_back.error.message
        )
    assert worker.stop(signal.SIGTERM) == 0, worker.logs()
    assert lh.wait_report(running, timeout_s=5).status == TaskStatus.TASK_SUCCESS
    order = [r.task_run_id.task_guid for r in lh.reports]
    assert max(order.index(waiting), order.index(parked)) < order.index(running)
    assert len(comfy.submitted) == 1


def test_template_task_with_an_input_image(lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI):
    """A template task uploads its image under its prompt's name and reports the params used."""
    from tests.graphs import PNG_1PX_BASE64

    spawn()
    guid = uuid.uuid4().hex
    task = {
        "template": "image_resize",
        "params": {"width": 16},
        "images": [{"name": "image", "base64": PNG_1PX_BASE64}],
    }
    report = run_task(lh, task, guid=guid)
    assert report.status == TaskStatus.TASK_SUCCESS, report
    result = json.loads(report.output.json_obj)
    assert result["template"] == "image_resize" and result["params"]["width"] == 16
    [upload] = comfy.uploads
    assert upload["name"] == f"{result['prompt_id']}-image.png"


def readyz(port: int) -> dict[str, Any]:
    import httpx

    try:
        body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
    except httpx.HTTPError:
        return {}
    return body


@pytest.mark.parametrize(
    "text", ["{not json", "[" * 5000 + "]" * 5000], ids=["not-json", "5000-deep"]
)
def test_undecodable_input_is_reported_and_the_next_task_runs(
    lh: FakeLittleHorse, spawn: Any, text: str
):
    """Input the SDK cannot decode is invalid-workflow, and the worker's only slot stays free."""
    from littlehorse.model import VariableValue

    spawn()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [VariableValue(json_obj=text)], task_guid=guid)
    report = lh.wait_report(guid, timeout_s=30)
    assert report.exception.name == "invalid-workflow"
    assert "is not valid JSON" in exception_content(report)["message"]
    assert run_task(lh, smoke(20)).status == TaskStatus.TASK_SUCCESS


def test_the_worker_waits_for_littlehorse_at_start(worker_env: dict[str, str], tmp_path: Path):
    """No LittleHorse yet: the worker retries with a log line each time, then serves when it appears."""
    lh_port, http_port = free_port(), free_port()
    env = {
        **worker_env,
        "LHC_API_PORT": str(lh_port),
        "WORKER_HTTP_PORT": str(http_port),
        "WORKER_HTTP_HOST": "127.0.0.1",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: worker.logs().count('"lh.unavailable"') >= 2, timeout_s=30)
        assert worker.proc.poll() is None  # still running, not crashed
        assert f"127.0.0.1:{lh_port}" in readyz(http_port).get("littlehorse", "")
        late = FakeLittleHorse()
        late.port = lh_port
        with late:
            late.wait_polling(timeout_s=30)
            assert run_task(late, smoke(21)).status == TaskStatus.TASK_SUCCESS
            wait_until(lambda: readyz(http_port).get("littlehorse") == "ok")
    finally:
        worker.stop()


def test_a_littlehorse_restart_is_noticed_and_polling_resumes(
    lh: FakeLittleHorse, worker_env: dict[str, str], tmp_path: Path
):
    """A dead stream turns /readyz not-ready at once; polling resumes soon after LittleHorse is back."""
    http_port = free_port()
    env = {**worker_env, "WORKER_HTTP_PORT": str(http_port), "WORKER_HTTP_HOST": "127.0.0.1"}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        lh.wait_polling(timeout_s=30)
        wait_until(lambda: readyz(http_port).get("littlehorse") == "ok")
        lh.stop()
        wait_until(lambda: readyz(http_port).get("littlehorse", "ok") != "ok", timeout_s=5)
        lh.start()
        lh.wait_polling(timeout_s=15)  # the SDK alone would wait for its 60 s heartbeat
        assert run_task(lh, smoke(22)).status == TaskStatus.TASK_SUCCESS
    finally:
        worker.stop()


def test_every_log_line_is_json_while_littlehorse_is_away(
    lh: FakeLittleHorse, worker_env: dict[str, str], tmp_path: Path
):
    """The SDK's own errors while LittleHorse is down arrive as JSON ``lib.log``, not tracebacks."""
    worker = WorkerProcess(worker_env, tmp_path / "worker.log")
    try:
        lh.wait_polling(timeout_s=30)
        lh.stop()
        # the SDK's heartbeat fails while LittleHorse is away, and says so through logging
        wait_until(lambda: '"lib.log"' in worker.logs(), timeout_s=60)
        lh.start()
        lh.wait_polling(timeout_s=30)
    finally:
        worker.stop(signal.SIGTERM)
    lines = [line for line in worker.logs().splitlines() if line.strip()]
    not_json = [line for line in lines if not is_json(line)]
    assert not_json == []
    library = [json.loads(line) for line in lines if '"lib.log"' in line]
    assert library and all(event["logger"] and event["message"] for event in library)


def is_json(line: str) -> bool:
    """Whether a log line is one JSON object."""
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_a_result_lh_never_received_is_adopted_by_the_retry(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI, tmp_path: Path
):
    """LittleHorse away when the task ends and the worker dies: attempt 1 reuses prompt and files."""
    comfy.execution_time_s = 1.0
    first = spawn()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(23)], wf_run_id="wf-lost", task_guid=guid, attempt_number=0)
    wait_until(lambda: comfy.submitted)
    lh.stop()  # the report of attempt 0 cannot be delivered
    manifest = tmp_path / "out" / "wf-lost" / guid / "manifest.json"
    wait_until(lambda: manifest.is_file(), timeout_s=30)
    first.stop(signal.SIGKILL)
    lh.start()
    spawn()
    report = run_task(lh, smoke(23), guid=guid, attempt=1, wf_run_id="wf-lost")
    assert report.status == TaskStatus.TASK_SUCCESS, report
    result = json.loads(report.output.json_obj)
    assert result["prompt_id"] == prompt_of(lh, "wf-lost", guid, 0) and len(comfy.submitted) == 1
    assert [o["reused"] for o in result["outputs"]] == [True]


@pytest.mark.slow
def test_a_report_rides_out_littlehorse_away_for_longer_than_the_sdk_would(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI, tmp_path: Path
):
    """LittleHorse away longer than the SDK's ~30 s patience: the result still arrives."""
    comfy.execution_time_s = 0.5
    worker = spawn()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(24)], wf_run_id="wf-away", task_guid=guid)
    wait_until(lambda: comfy.submitted)
    lh.stop()
    manifest = tmp_path / "out" / "wf-away" / guid / "manifest.json"
    wait_until(lambda: manifest.is_file(), timeout_s=30)
    # the worker says how long it has been retrying the report: past the SDK's 30 s
    wait_until(lambda: report_retried_s(worker.logs()) > 31, timeout_s=90)
    lh.start()
    assert lh.wait_report(guid, timeout_s=30).status == TaskStatus.TASK_SUCCESS


def test_a_repeated_sigterm_is_one_request_not_a_force(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI
):
    """A process-group kill delivers SIGTERM twice at once: still a graceful drain."""
    comfy.execution_time_s = 1.5
    worker = spawn()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(25)], task_guid=guid, wf_run_id="wf-twice")
    wait_until(lambda: prompt_of(lh, "wf-twice", guid, 0) in comfy.submitted)
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0, worker.logs()
    assert lh.wait_report(guid, timeout_s=5).status == TaskStatus.TASK_SUCCESS
    assert comfy.interrupted == []


def test_a_read_only_output_dir_takes_no_task(
    lh: FakeLittleHorse, worker_env: dict[str, str], comfy: FakeComfyUI, tmp_path: Path
):
    """An output dir that cannot be written: /readyz says so and no task is claimed."""
    out = tmp_path / "not-a-dir"
    out.write_text("a file where the output directory should be")
    http_port = free_port()
    env = {
        **worker_env,
        "COMFYUI_OUTPUT_DIR": str(out),
        "WORKER_HTTP_PORT": str(http_port),
        "WORKER_HTTP_HOST": "127.0.0.1",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        lh.wait_task_def(TASK)
        guid = uuid.uuid4().hex
        lh.schedule(TASK, [smoke(26)], task_guid=guid)
        wait_until(lambda: str(out) in readyz(http_port).get("output", ""), timeout_s=30)
        assert lh.queued(TASK) == 1 and comfy.submitted == []
        out.unlink()
        assert lh.wait_report(guid, timeout_s=60).status == TaskStatus.TASK_SUCCESS
    finally:
        worker.stop()


def test_prompt_ids_are_canonical_lowercase_uuids():
    """The newest ComfyUI accepts only canonical lowercase UUIDs; ours always are."""
    import uuid as uuid_module

    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(st.text(min_size=1), st.text(min_size=1), st.integers(0, 1000), st.integers(0, 2**64))
    def check(wf_run_id: str, guid: str, attempt: int, scheduled_at_ns: int) -> None:
        prompt_id = prompt_id_for(wf_run_id, guid, attempt, scheduled_at_ns)
        assert prompt_id == str(uuid_module.UUID(prompt_id)) == prompt_id.lower()

    check()


def test_stopping_the_wfrun_cancels_the_prompt(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI, worker_env: dict[str, str]
):
    """StopWfRun (a cancelled job): the worker interrupts the prompt; the task is execution-interrupted."""
    from littlehorse.model import RunWfRequest, StopWfRunRequest, WfRunId

    done = subprocess.run(
        [sys.executable, "main.py", "register"], cwd=ROOT, env=worker_env, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    comfy.execution_time_s = 6  # 2 s per node: the interrupt lands at the next node boundary
    spawn()
    stub = lh.config().stub()
    stub.RunWf(
        RunWfRequest(
            wf_spec_name="comfyui-generate",
            id="wf-cancel",
            variables={"workflow": to_variable_value(smoke(60))},
        )
    )
    prompt_id = prompt_of(lh, "wf-cancel", "0-1", 0)
    wait_until(lambda: prompt_id in comfy.submitted, timeout_s=30)
    stub.StopWfRun(StopWfRunRequest(wf_run_id=WfRunId(id="wf-cancel")))
    wait_until(lambda: prompt_id in comfy.interrupted, timeout_s=30)
    attempt = lh.wait_for(
        lambda: next(
            (
                a
                for a in lh.task_run("0-1", wf_run_id="wf-cancel").attempts
                if a.HasField("exception")
            ),
            None,
        ),
        30,
        "the attempt's exception",
    )
    assert attempt.exception.name == "execution-interrupted"


# --- prefetch and warm start ------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, MAX_PREFETCH])
def test_with_prefetch_the_next_prompts_wait_in_comfyui(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI, depth: int
):
    """WORKER_PREFETCH=N: N prompts queue behind the running one; each deadline starts late."""
    comfy.execution_time_s = 2
    spawn(WORKER_PREFETCH=str(depth), COMFYUI_HISTORY_TIMEOUT_SEC="3")
    guids = [uuid.uuid4().hex for _ in range(1 + depth)]
    prompts: list[str] = []
    for n, guid in enumerate(guids):
        lh.schedule(TASK, [smoke(70 + n)], wf_run_id=f"wf-p{n}", task_guid=guid)
        prompts.append(prompt_of(lh, f"wf-p{n}", guid, 0))
        wait_until(lambda: prompts[-1] in comfy.submitted, timeout_s=30)
    assert prompts[0] not in comfy.finish_times  # queued behind the running prompt
    for guid in guids:  # 2 s queued (or 4) + 2 s running > 3 s: each deadline counts from start
        assert lh.wait_report(guid, timeout_s=30).status == TaskStatus.TASK_SUCCESS
    assert comfy.executed == prompts


def test_with_prefetch_a_queued_task_fetches_its_models_while_the_current_one_runs(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI, tmp_path: Path
):
    """WORKER_PREFETCH=1: the next task's declared model is downloaded during task 1's run."""
    served = tmp_path / "served"
    served.mkdir()
    data = os.urandom(100_000)
    with ModelServer(served) as server:
        sha = server.add("prefetched.safetensors", data)
        models = tmp_path / "models"
        models.mkdir()
        comfy.models_dir = models
        spawn(
            WORKER_PREFETCH="1",
            COMFYUI_MODELS_DIR=str(models),
            COMFYUI_MODELS_URL_ALLOW="127.0.0.1",
        )
        first, second = uuid.uuid4().hex, uuid.uuid4().hex
        sleeping = {
            **smoke(74),
            "2": {"class_type": "FakeSleep", "inputs": {"seconds": 600, "value": ["1", 0]}},
        }
        lh.schedule(TASK, [sleeping], wf_run_id="wf-m1", task_guid=first)
        p1 = prompt_of(lh, "wf-m1", first, 0)
        wait_until(lambda: p1 in comfy.started_times, timeout_s=30)
        model = {
            "folder": "checkpoints",
            "name": "prefetched.safetensors",
            "url": server.url("prefetched.safetensors"),
            "sha256": sha,
        }
        task = {
            "template": "txt2img_sdxl",
            "params": {"prompt": "p"},
            "overrides": {"4.ckpt_name": "prefetched.safetensors"},
            "models": [model],
        }
        lh.schedule(TASK, [task], wf_run_id="wf-m2", task_guid=second)
        p2 = prompt_of(lh, "wf-m2", second, 0)
        wait_until(lambda: p2 in comfy.submitted, timeout_s=30)
        assert (models / "checkpoints/prefetched.safetensors").read_bytes() == data
        assert p1 not in comfy.finish_times  # task 1 still runs: the download overlapped it
        httpx.post(f"{comfy.base_url}/interrupt", json={"prompt_id": p1})
        report = lh.wait_report(second, timeout_s=30)
        assert report.status == TaskStatus.TASK_SUCCESS
        assert "model prefetched.safetensors: downloaded 100.0 KB in" in report.log_output.str


@pytest.mark.parametrize("depth", [1, 2, MAX_PREFETCH])
def test_sigterm_with_prefetch_hands_back_every_prompt_that_has_not_started(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI, depth: int
):
    """Every queued prompt leaves ComfyUI's queue, its task goes back at once; the running one ends."""
    comfy.execution_time_s = 3
    worker = spawn(WORKER_PREFETCH=str(depth))
    running = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(72)], wf_run_id="wf-run", task_guid=running)
    wait_until(lambda: prompt_of(lh, "wf-run", running, 0) in comfy.submitted, timeout_s=30)
    queued = {uuid.uuid4().hex: n for n in range(depth)}
    for guid, n in queued.items():
        lh.schedule(TASK, [smoke(73 + n)], wf_run_id=f"wf-queued{n}", task_guid=guid)
    p_queued = [prompt_of(lh, f"wf-queued{n}", guid, 0) for guid, n in queued.items()]
    wait_until(lambda: all(p in comfy.submitted for p in p_queued), timeout_s=30)
    worker.proc.send_signal(signal.SIGTERM)
    for guid in queued:
        handed_back = lh.wait_report(guid, timeout_s=10)
        assert handed_back.status == TaskStatus.TASK_FAILED
        assert "worker-shutting-down" in handed_back.error.message
    assert all(p in comfy.deleted for p in p_queued)
    assert worker.stop(signal.SIGTERM) == 0, worker.logs()
    assert lh.wait_report(running, timeout_s=5).status == TaskStatus.TASK_SUCCESS
    assert comfy.executed == [prompt_of(lh, "wf-run", running, 0)]


@pytest.mark.parametrize("depth", [1, 2, MAX_PREFETCH])
def test_a_worker_killed_with_every_slot_in_comfyui_loses_nothing(
    lh: FakeLittleHorse, spawn: Any, comfy: FakeComfyUI, depth: int
):
    """Every prompt (running and queued) is adopted by its retry; each runs once."""
    comfy.execution_time_s = 2
    first = spawn(WORKER_PREFETCH=str(depth))
    guids = [uuid.uuid4().hex for _ in range(1 + depth)]
    prompts: list[str] = []

    def submitted(prompt_id: str) -> Callable[[], bool]:
        return lambda: prompt_id in comfy.submitted

    for n, guid in enumerate(guids):
        lh.schedule(TASK, [smoke(74 + n)], wf_run_id=f"wf-k{n}", task_guid=guid)
        prompts.append(prompt_of(lh, f"wf-k{n}", guid, 0))
        wait_until(submitted(prompts[-1]), timeout_s=30)
    first.stop(signal.SIGKILL)
    spawn(WORKER_PREFETCH=str(depth))
    for n, guid in enumerate(guids):
        lh.schedule(TASK, [smoke(74 + n)], wf_run_id=f"wf-k{n}", task_guid=guid, attempt_number=1)
    for n, guid in enumerate(guids):
        report = lh.wait_report(guid, 1, timeout_s=30)
        assert report.status == TaskStatus.TASK_SUCCESS, report
        assert json.loads(report.output.json_obj)["prompt_id"] == prompts[n]
    assert comfy.submitted == prompts and sorted(comfy.executed) == sorted(prompts)


def test_the_warm_up_runs_before_any_task(
    lh: FakeLittleHorse, worker_env: dict[str, str], comfy: FakeComfyUI, tmp_path: Path
):
    """WORKER_WARMUP_WORKFLOW runs first, keeps no outputs, and readiness waits for it."""
    comfy.execution_time_s = 3  # a warm-up long enough to be seen not ready
    port = free_port()
    env = {
        **worker_env,
        "WORKER_WARMUP_WORKFLOW": "smoke",
        "WORKER_HTTP_PORT": str(port),
        "WORKER_HTTP_HOST": "127.0.0.1",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        lh.wait_task_def(TASK)
        guid = uuid.uuid4().hex
        lh.schedule(TASK, [smoke(76)], wf_run_id="wf-warm", task_guid=guid)
        wait_until(lambda: readyz(port).get("warmup", "ok") != "ok", timeout_s=30)
        assert lh.wait_report(guid, timeout_s=30).status == TaskStatus.TASK_SUCCESS
        warm, task = comfy.executed
        assert task == prompt_of(lh, "wf-warm", guid, 0) and warm != task
        assert readyz(port)["warmup"] == "ok"
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["wf-warm"]
    finally:
        worker.stop()
