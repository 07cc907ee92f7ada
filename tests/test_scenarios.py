"""What the worker does on the LittleHorse side, end to end, on the fake and on the real server.

Every test runs twice (``[fake]``, ``[real]``) through the same commands a user types:
``main.py register``, ``main.py worker``, ``main.py submit`` / ``jobs``. Where the fake
scales time (task timeouts, retry backoff), tests that depend on a timeout ask for real
time (``littlehorse.real_time()``).
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from littlehorse.model import LHStatus

from comfyui_worker.lh.api import LittleHorse
from comfyui_worker.lh.wfspec import build_workflow
from comfyui_worker.settings import DeadlineSettings, load
from fakes.comfyui import FakeComfyUI
from fakes.littlehorses import wait_for
from tests.conftest import wait_until
from tests.stack import TASK, Stack

pytestmark = pytest.mark.slow  # workers and WfRuns: seconds each, tens on the real server

UNKNOWN_NODE = {"1": {"class_type": "NoSuchNode", "inputs": {}}}


def submit(stack: Stack, *args: str) -> str:
    """``main.py submit ARGS``; the new job's id."""
    done = stack.main("submit", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def show(stack: Stack, job_id: str) -> dict[str, Any]:
    """``main.py jobs show ID --json``."""
    done = stack.main("jobs", "show", job_id, "--json")
    assert done.returncode == 0, done.stderr
    job: dict[str, Any] = json.loads(done.stdout)
    return job


def listed(stack: Stack, *args: str) -> list[str]:
    """Ids ``main.py jobs ARGS --json`` lists."""
    done = stack.main("jobs", *args, "--json", "--limit", "100")
    assert done.returncode == 0, done.stderr
    return [job["id"] for job in json.loads(done.stdout)]


def wait_status(stack: Stack, job_id: str, *statuses: str) -> dict[str, Any]:
    """Until the job is in one of ``statuses``; its record."""
    wait_until(lambda: show(stack, job_id)["status"] in statuses, timeout_s=120)
    return show(stack, job_id)


def test_register_then_success_business_and_technical_failures(
    stack: Stack, comfy: FakeComfyUI, tmp_path: Path
):
    """A success; invalid-workflow through the WfSpec's handler (exit 4); a technical error
    retried per the WfSpec until task-failed (exit 6), each attempt's error one line."""
    stack.register("--lane", "urgent")
    assert stack.lh.has_task_def(TASK) and stack.lh.has_wf_spec("comfyui-generate")
    assert stack.lh.has_task_def(f"{TASK}-urgent") and stack.lh.has_wf_spec(
        "comfyui-generate-urgent"
    )
    worker = stack.worker(comfy, COMFYUI_HTTP_RETRIES="0")
    stack.wait_polling()
    ok = stack.main("submit", "smoke", "--param", "color=31", "--wait")
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "success", ok.stderr
    counted = [  # its round trips, timed by the worker
        f'comfyui_worker_littlehorse_call_seconds_count{{call="{call}"}} 1.0'
        for call in ("claim", "checkpoint", "report")
    ]
    wait_until(lambda: all(line in worker.metrics() for line in counted))
    bad = tmp_path / "unknown_node.json"
    bad.write_text(json.dumps(UNKNOWN_NODE))
    business = stack.main("submit", str(bad), "--wait", "--id", "business-1")
    assert business.returncode == 4, business.stderr
    assert stack.lh.wait_wf_run("business-1").status == LHStatus.EXCEPTION
    assert show(stack, "business-1")["error"]["name"] == "invalid-workflow"
    comfy.fail_requests("POST", "/prompt", 100, status=500)
    technical = stack.main("submit", "smoke", "--param", "color=32", "--wait", "--id", "tech-1")
    comfy.clear_request_faults()
    assert technical.returncode == 6, technical.stderr
    job = show(stack, "tech-1")
    assert job["error"]["name"] == "task-failed" and len(job["attempts"]) == 4
    for attempt in job["attempts"]:
        assert attempt["status"] == "TASK_FAILED"
        assert attempt["error"].startswith("comfyui-server-error: ComfyUI answered 500")
        assert "Traceback" not in attempt["error"]


def test_a_retry_adopts_the_prompt_of_a_killed_attempt(stack: Stack, comfy: FakeComfyUI):
    """kill -9 mid-execution; the attempt times out; its retry reads the checkpoint and
    adopts the prompt: the graph runs once."""
    stack.lh.real_time()
    done = stack.main("register", WORKER_TASK_TIMEOUT_SEC="4")
    assert done.returncode == 0, done.stderr
    comfy.execution_time_s = 6
    first = stack.worker(comfy)
    stack.wait_polling()
    job_id = submit(stack, "smoke", "--param", "color=33", "--id", "adopt-1")
    wait_until(lambda: comfy.submitted, timeout_s=60)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(30)
    stack.worker(comfy)
    job = wait_status(stack, job_id, "completed", "failed")
    assert job["status"] == "completed", job
    assert [a["status"] for a in job["attempts"]] == ["TASK_TIMEOUT", "TASK_SUCCESS"]
    assert job["result"]["prompt_id"] == comfy.submitted[0] and comfy.executed == comfy.submitted
    [record] = stack.lh.checkpoints(job_id)  # attempt 1 adopted: it recorded no submission
    assert record["prompt_id"] == comfy.submitted[0] and record["attempt"] == 0


def test_a_task_that_timed_out_while_parked_is_fenced_and_submits_nothing(
    stack: Stack, comfy: FakeComfyUI
):
    """With one slot the SDK parks a second task; it times out meanwhile, and at its turn
    LittleHorse answers its checkpoint with STOP_TASK: no GPU work for it."""
    stack.lh.real_time()
    deadlines = load(DeadlineSettings, {"WORKER_TASK_TIMEOUT_SEC": "2"})
    short = build_workflow(deadlines, TASK, name="short-timeout")
    LittleHorse(stack.lh.config(), stack.lh.address).put_wf_spec(short)
    comfy.execution_time_s = 6
    worker = stack.worker(comfy)
    stack.wait_polling()
    running = submit(stack, "smoke", "--param", "color=34", "--id", "long-2")
    wait_until(lambda: comfy.started_times, timeout_s=60)
    comfy.execution_time_s = 0  # the running prompt keeps its 6 s
    parked = submit(stack, "smoke", "--param", "color=35", "--wf-spec", "short-timeout")
    wait_until(lambda: "attempt-fenced" in worker.logs(), timeout_s=60)
    assert len(comfy.submitted) == 1
    assert wait_status(stack, running, "completed")["status"] == "completed"
    job = wait_status(stack, parked, "completed", "failed")
    assert [a["status"] for a in job["attempts"]][-1] == "TASK_SUCCESS", job
    assert job["attempts"][0]["status"] == "TASK_TIMEOUT"
    records = stack.lh.checkpoints(parked)
    assert [r["attempt"] for r in records] == [len(job["attempts"]) - 1]  # only the last
    assert len(comfy.submitted) == 2 and comfy.executed == comfy.submitted


def test_a_job_cancelled_while_queued_runs_nothing(stack: Stack, comfy: FakeComfyUI):
    """StopWfRun before any worker claimed it: the worker that claims it asks first, and
    reports execution-interrupted without submitting anything."""
    job_id = submit(stack, "smoke", "--param", "color=36")
    cancel = stack.main("jobs", "cancel", job_id)
    assert cancel.returncode == 0 and "is being cancelled" in cancel.stderr, cancel.stderr
    scheduled = stack.lh.wait_attempts(job_id, lambda attempts: bool(attempts))
    began = scheduled.attempts[0].schedule_time.ToDatetime(tzinfo=UTC)
    wait_until(lambda: (datetime.now(UTC) - began).total_seconds() > 1.5)  # queued a while
    stack.worker(comfy)
    job = wait_status(stack, job_id, "cancelled")
    assert comfy.submitted == [] and job["error"]["name"] == "execution-interrupted"
    assert "before it started" in job["attempts"][0]["error"]


def test_jobs_are_listed_by_every_status_word_and_by_start_time(
    stack: Stack, comfy: FakeComfyUI, tmp_path: Path
):
    """completed, failed/error, running, active, queued, cancelling, cancelled/halted, --since."""
    stack.register("--lane", "idle")  # no worker serves it: its jobs stay queued
    stack.worker(comfy)
    stack.wait_polling()
    done = submit(stack, "smoke", "--param", "color=37")
    wait_status(stack, done, "completed")
    after_done = datetime.now(UTC).isoformat()
    bad = tmp_path / "unknown_node.json"
    bad.write_text(json.dumps(UNKNOWN_NODE))
    failed = submit(stack, str(bad))
    wait_status(stack, failed, "failed")
    comfy.execution_time_s = 30
    running = submit(stack, "smoke", "--param", "color=38")
    wait_status(stack, running, "running")
    queued = submit(stack, "smoke", "--lane", "idle")
    halted = submit(stack, "smoke", "--param", "color=39", "--lane", "idle")
    assert stack.main("jobs", "cancel", halted).returncode == 0
    wait_status(stack, halted, "cancelling")
    assert listed(stack, "--status", "completed") == [done]
    assert listed(stack, "--status", "failed") == listed(stack, "--status", "error") == [failed]
    assert listed(stack, "--status", "running") == listed(stack, "--status", "active") == [running]
    assert set(listed(stack, "--since", after_done)) == {failed, running}
    assert listed(stack, "--lane", "idle", "--status", "queued") == [queued]
    assert listed(stack, "--lane", "idle", "--status", "cancelling") == [halted]
    assert set(listed(stack, "--lane", "idle", "--status", "active")) == {queued, halted}
    cancelled = stack.main("jobs", "cancel", running, "--wait")
    assert cancelled.returncode == 0, cancelled.stderr
    assert (
        listed(stack, "--status", "cancelled") == listed(stack, "--status", "halted") == [running]
    )
    assert listed(stack, "--lane", "idle", "--status", "halted") == [halted]


def test_the_server_restarted_under_a_running_task(stack: Stack, comfy: FakeComfyUI):
    """LittleHorse killed and started again on its state while a prompt runs: the worker
    reconnects, the result is reported, nothing runs twice."""
    comfy.execution_time_s = 4
    stack.worker(comfy)
    stack.wait_polling()
    job_id = submit(stack, "smoke", "--param", "color=40")
    wait_until(lambda: comfy.started_times, timeout_s=60)
    stack.lh.restart(kill=True)
    # the real server answers NOT_FOUND for a while after a kill -9 (its store restores
    # from Kafka after /readiness says ready): wait until it serves the job again
    wait_for(lambda: stack.lh.wf_run(job_id), 120, "the restarted server serving the job")
    job = wait_status(stack, job_id, "completed", "failed")
    assert job["status"] == "completed" and len(job["attempts"]) == 1, job
    assert comfy.executed == comfy.submitted == [job["result"]["prompt_id"]]
    comfy.execution_time_s = 0
    after = stack.main("submit", "smoke", "--param", "color=41", "--wait")  # new work flows
    assert after.returncode == 0, after.stderr
