"""Exactly-once GPU work across workers: checkpoints as fences, adoption on a peer ComfyUI.

Real worker subprocesses, two fake ComfyUIs, one fake LittleHorse that applies the
server's fencing rule (STOP_TASK for an attempt that is not current and running).
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from littlehorse.model import TaskStatus

from fakes.comfyui import FakeComfyUI
from fakes.littlehorse import FakeLittleHorse
from fakes.seaweed import SeaweedS3
from tests.conftest import make_request, prompt_of, wait_until
from tests.graphs import smoke
from tests.outputs.test_store_open import objects, s3_env
from tests.worker.test_task import TASK, WorkerProcess

# Worker subprocesses against two ComfyUIs: end to end, seconds each.
pytestmark = [pytest.mark.usefixtures("lh"), pytest.mark.slow]


@pytest.fixture
def lh() -> Iterator[FakeLittleHorse]:
    with FakeLittleHorse() as fake:
        yield fake


@pytest.fixture
def comfy_b(tmp_path: Path) -> Iterator[FakeComfyUI]:
    fake = FakeComfyUI(tmp_path / "comfy-b").start()
    try:
        yield fake
    finally:
        fake.stop()


def worker_env(lh: FakeLittleHorse, comfy: FakeComfyUI, out: Path, **extra: str) -> dict[str, str]:
    import os

    return {
        "PATH": os.environ.get("PATH", ""),
        **lh.env(),
        "COMFYUI_BASE_URL": comfy.base_url,
        "COMFYUI_OUTPUT_DIR": str(out),
        "COMFYUI_POLL_INTERVAL_SEC": "0.2",
        "COMFYUI_HISTORY_TIMEOUT_SEC": "30",
        "WORKER_HTTP_PORT": "0",
        "WORKER_LOG_FORMAT": "json",
        **extra,
    }


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start(workers: list[WorkerProcess], env: dict[str, str], tmp_path: Path) -> WorkerProcess:
    worker = WorkerProcess(env, tmp_path / f"worker{len(workers)}.log")
    workers.append(worker)
    return worker


def test_a_retry_on_another_worker_adopts_the_prompt_on_the_first_comfyui(
    lh: FakeLittleHorse,
    comfy: FakeComfyUI,
    comfy_b: FakeComfyUI,
    workers: list[WorkerProcess],
    tmp_path: Path,
    seaweed: SeaweedS3,
):
    """Worker A dies mid-execution; attempt 1 lands on B, which waits on A's ComfyUI: one run."""
    out = tmp_path / "out"
    store = s3_env(seaweed, f"fleet-{uuid.uuid4().hex[:8]}")
    comfy.execution_time_s = 3
    worker_a = start(workers, worker_env(lh, comfy, out, **store), tmp_path)
    lh.wait_polling()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(40)], wf_run_id="wf-fleet", task_guid=guid)
    wait_until(lambda: comfy.submitted)
    worker_a.stop(signal.SIGKILL)  # its ComfyUI keeps generating
    start(workers, worker_env(lh, comfy_b, out, **store), tmp_path)
    lh.wait_polling()
    lh.schedule(TASK, [smoke(40)], wf_run_id="wf-fleet", task_guid=guid, attempt_number=1)
    report = lh.wait_report(guid, 1, timeout_s=60)
    assert report.status == TaskStatus.TASK_SUCCESS, report
    result = json.loads(report.output.json_obj)
    assert result["prompt_id"] == prompt_of(lh, "wf-fleet", guid, 0)
    assert result["comfyui"]["base_url"] == comfy.base_url
    assert comfy.executed == [result["prompt_id"]] and comfy_b.submitted == []
    [output] = result["outputs"]
    stored = objects(seaweed, result["output_dir"].removeprefix(f"s3://{seaweed.bucket}/"))
    keys = {f"s3://{seaweed.bucket}/{key}" for key in stored}
    assert {output["path"], result["manifest"]} <= keys  # complete in the store


def test_a_retry_submits_here_when_the_first_comfyui_is_gone(
    lh: FakeLittleHorse,
    comfy: FakeComfyUI,
    comfy_b: FakeComfyUI,
    workers: list[WorkerProcess],
    tmp_path: Path,
):
    """If the ComfyUI an earlier attempt used is unreachable, the retry runs the graph here."""
    out = tmp_path / "out"
    comfy.execution_time_s = 30
    worker_a = start(workers, worker_env(lh, comfy, out), tmp_path)
    lh.wait_polling()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(41)], wf_run_id="wf-gone", task_guid=guid)
    wait_until(lambda: comfy.submitted)
    worker_a.stop(signal.SIGKILL)
    comfy.stop()
    start(workers, worker_env(lh, comfy_b, out, COMFYUI_HTTP_RETRIES="0"), tmp_path)
    lh.wait_polling()
    lh.schedule(TASK, [smoke(41)], wf_run_id="wf-gone", task_guid=guid, attempt_number=1)
    report = lh.wait_report(guid, 1, timeout_s=60)
    assert report.status == TaskStatus.TASK_SUCCESS, report
    assert comfy_b.submitted == [prompt_of(lh, "wf-gone", guid, 1)]
    checkpoints = lh.checkpoints[("wf-gone", guid)]
    urls = [json.loads(c.value.json_obj)["comfyui_url"] for c in checkpoints]
    assert urls == [comfy.base_url, comfy_b.base_url]


def test_an_attempt_fenced_by_stop_task_submits_nothing(
    lh: FakeLittleHorse, comfy: FakeComfyUI, workers: list[WorkerProcess], tmp_path: Path
):
    """The attempt times out while the worker prepares it: PutCheckpoint says STOP_TASK."""
    comfy.delay_requests("GET", "/object_info", 3)
    worker = start(workers, worker_env(lh, comfy, tmp_path / "out"), tmp_path)
    lh.wait_polling()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(42)], wf_run_id="wf-fenced", task_guid=guid)
    wait_until(lambda: ("GET", "/object_info") in comfy.requests)
    lh.expire(guid, 0)
    wait_until(lambda: '"attempt-fenced"' in worker.logs(), timeout_s=30)
    assert comfy.submitted == []


def test_a_parked_task_that_timed_out_submits_nothing(
    lh: FakeLittleHorse, comfy: FakeComfyUI, workers: list[WorkerProcess], tmp_path: Path
):
    """A task claimed while another ran, timed out while parked, does no GPU work at its turn."""
    comfy.execution_time_s = 3
    worker = start(workers, worker_env(lh, comfy, tmp_path / "out"), tmp_path)
    lh.wait_polling()
    running, parked = uuid.uuid4().hex, uuid.uuid4().hex
    lh.schedule(TASK, [smoke(43)], wf_run_id="wf-run", task_guid=running)
    wait_until(lambda: comfy.submitted)
    lh.schedule(TASK, [smoke(44)], wf_run_id="wf-parked", task_guid=parked, timeout_s=0.5)
    lh.wait_delivered(parked)
    assert lh.wait_report(running, timeout_s=30).status == TaskStatus.TASK_SUCCESS
    wait_until(lambda: '"attempt-fenced"' in worker.logs(), timeout_s=30)
    assert comfy.submitted == [prompt_of(lh, "wf-run", running, 0)]


def checkpoint_values(lh: FakeLittleHorse, wf_run_id: str, guid: str) -> list[dict[str, Any]]:
    return [json.loads(c.value.json_obj) for c in lh.checkpoints[(wf_run_id, guid)]]


def test_every_submission_is_recorded_before_the_post(
    lh: FakeLittleHorse, comfy: FakeComfyUI, workers: list[WorkerProcess], tmp_path: Path
):
    """The checkpoint names the ComfyUI (as advertised), the prompt id and the worker."""
    env = worker_env(
        lh,
        comfy,
        tmp_path / "out",
        COMFYUI_ADVERTISED_URL="http://gpu-7.internal:8188",
        LHW_TASK_WORKER_ID="worker-7",
    )
    start(workers, env, tmp_path)
    lh.wait_polling()
    guid = uuid.uuid4().hex
    lh.schedule(TASK, [smoke(45)], wf_run_id="wf-rec", task_guid=guid)
    assert lh.wait_report(guid, timeout_s=30).status == TaskStatus.TASK_SUCCESS
    assert checkpoint_values(lh, "wf-rec", guid) == [
        {
            "comfyui_url": "http://gpu-7.internal:8188",
            "prompt_id": prompt_of(lh, "wf-rec", guid, 0),
            "worker_id": "worker-7",
            "attempt": 0,
            "graph_sha256": make_request(smoke(45)).graph_sha256,
            "queued_behind": 0,  # prefetch off: never behind the worker's own prompts
        }
    ]
