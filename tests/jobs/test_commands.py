"""``main.py submit`` and ``main.py jobs`` as a user runs them, against real workers and lanes."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from comfyui_worker.jobs import text as jobprint
from comfyui_worker.jobs.args import since
from comfyui_worker.jobs.model import Job
from comfyui_worker.lh import lanes
from fakes.comfyui import FakeComfyUI
from tests.conftest import wait_until
from tests.graphs import PNG_1PX_BASE64
from tests.stack import Stack

TASK = "execute-comfyui-workflow"
URGENT_TASK = "execute-comfyui-workflow-urgent"


@pytest.fixture
def worker(stack: Stack, comfy: FakeComfyUI) -> None:
    stack.worker(comfy)
    stack.wait_polling(TASK)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_submit_wait_prints_the_result_and_downloads_the_outputs(stack, worker, tmp_path):
    """--wait shows progress on stderr, the result JSON on stdout; --download checks each sha256."""
    done = stack.main(
        "submit", "smoke", "--param", "color=255", "--wait", "--download", str(tmp_path / "dl")
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "success" and result["params"]["color"] == 255
    assert "attempt 1/4: started on worker" in done.stderr and "completed in" in done.stderr
    [output] = result["outputs"]
    saved = tmp_path / "dl" / output["relative_path"]
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == output["sha256"]


@pytest.mark.slow
def test_submit_sends_an_image_file_and_prints_the_id(stack, worker, comfy, tmp_path):
    """--image NAME=PATH goes base64 in the envelope; without --wait, stdout is the job id."""
    image = tmp_path / "in.png"
    image.write_bytes(base64.b64decode(PNG_1PX_BASE64))
    done = stack.main(
        "submit",
        "image_resize",
        "--image",
        f"image={image}",
        "--param",
        "width=16",
        "--id",
        "img-1",
    )
    assert done.returncode == 0 and done.stdout.strip() == "img-1", done.stderr
    stack.lh.wait_wf_run("img-1")  # the real server's reads may lag a moment behind
    show = stack.main("jobs", "show", "img-1", "--json")
    job = json.loads(show.stdout)
    assert job["status"] == "completed" and job["template"] == "image_resize"
    assert job["input"]["images"][0]["base64"].endswith("base64 characters>")
    assert len(comfy.uploads) == 1


@pytest.mark.slow
def test_a_failed_job_exits_like_run_lists_shows_and_retries(stack, worker, comfy):
    """exit 5 with the node error; idempotent --id; jobs, show and retry tell the story."""
    comfy.fail_node("ImageBlur", message="boom")
    failed = stack.main("submit", "smoke", "--param", "color=5", "--wait", "--id", "bad-1")
    assert failed.returncode == 5, failed.stderr
    assert (
        "job bad-1 failed: execution-failed: node 2 (ImageBlur) raised Exception: boom"
        in failed.stderr
    )
    again = stack.main("submit", "smoke", "--param", "color=5", "--id", "bad-1")
    assert (
        again.returncode == 0
        and again.stdout.strip() == "bad-1"
        and "existed already" in again.stderr
    )
    clash = stack.main("submit", "smoke", "--param", "color=6", "--id", "bad-1")
    assert clash.returncode == 8 and "already exists with a different input" in clash.stderr
    listed = stack.main("jobs", "--status", "failed")
    [row] = [line for line in lines(listed.stdout) if line.startswith("bad-1")]
    assert "failed" in row and "node 2 (ImageBlur)" in row
    show = stack.main("jobs", "show", "bad-1")
    assert "node 2 (ImageBlur) raised Exception: boom" in show.stdout
    assert "| " in show.stdout and "submitted prompt" in show.stdout  # the attempt's trail
    comfy.clear_failures()
    retry = stack.main("jobs", "retry", "bad-1", "--wait")
    assert retry.returncode == 0, retry.stderr
    retries = stack.main("jobs", "--retry-of", "bad-1", "--json")
    [summary] = json.loads(retries.stdout)
    assert summary["retry_of"] == "bad-1" and summary["status"] == "completed"
    assert "retried as" in stack.main("jobs", "show", "bad-1").stdout


@pytest.mark.slow
def test_cancel_interrupts_the_prompt_and_the_job_shows_cancelled(stack, worker, comfy):
    """jobs cancel: StopWfRun, the worker cancels its prompt, and the job is cancelled after."""
    comfy.execution_time_s = 6  # 2 s per node: the interrupt lands at the next node boundary
    submitted = stack.main("submit", "smoke", "--param", "color=60", "--id", "long-1")
    assert submitted.returncode == 0, submitted.stderr
    wait_until(lambda: comfy.submitted, timeout_s=30)
    [prompt_id] = comfy.submitted
    cancel = stack.main("jobs", "cancel", "long-1", "--wait")
    assert cancel.returncode == 0 and "job long-1 cancelled" in cancel.stderr, cancel.stderr
    wait_until(lambda: prompt_id in comfy.interrupted, timeout_s=30)
    listed = stack.main("jobs", "--status", "cancelled", "--json")
    assert [job["id"] for job in json.loads(listed.stdout)] == ["long-1"]
    assert "status     cancelled" in stack.main("jobs", "show", "long-1").stdout


@pytest.mark.slow
def test_errors_are_one_line_with_their_own_exit_codes(stack, tmp_path):
    """Unknown id 9, a bad file or template 4, LittleHorse down 8: one line each."""
    unknown = stack.main("jobs", "show", "nope")
    assert unknown.returncode == 9 and lines(unknown.stderr) == [
        f"error [not-found]: no job 'nope' in LittleHorse at {stack.lh.address}"
    ]
    missing = stack.main("submit", str(tmp_path / "missing.json"))
    assert missing.returncode == 4 and len(lines(missing.stderr)) == 1
    typo = stack.main("submit", "smoek")
    assert typo.returncode == 4 and "did you mean 'smoke'?" in typo.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = stack.main("jobs", LHC_API_PORT=str(port))
    assert down.returncode == 8 and len(lines(down.stderr)) == 1
    assert f"127.0.0.1:{port} is unreachable" in down.stderr


@pytest.mark.slow
def test_a_claimed_job_waits_for_the_gpu_until_its_prompt_is_in_comfyui(stack, worker, comfy):
    """One slot: the second job is claimed but shows ``waiting``, and its run has not begun."""
    comfy.execution_time_s = 6
    for job_id, color in (("gpu-1", 61), ("gpu-2", 62)):
        assert (
            stack.main("submit", "smoke", "--param", f"color={color}", "--id", job_id).returncode
            == 0
        )
    wait_until(lambda: len(comfy.submitted) == 1, timeout_s=30)

    def show(job_id: str) -> dict[str, object]:
        shown: dict[str, object] = json.loads(stack.main("jobs", "show", job_id, "--json").stdout)
        return shown

    wait_until(lambda: show("gpu-2")["attempts"], timeout_s=30)  # the SDK claimed it (N+1)
    waiting, running = show("gpu-2"), show("gpu-1")
    assert (running["status"], waiting["status"]) == ("running", "waiting")
    assert waiting["run_s"] is None and running["run_s"] is not None
    assert "waiting for GPU" in stack.main("jobs", "--status", "waiting").stdout
    for job_id in ("gpu-1", "gpu-2"):
        assert stack.main("jobs", "cancel", job_id, "--wait").returncode == 0


@pytest.mark.slow
def test_a_prefetched_job_waits_until_comfyui_starts_its_prompt(stack, comfy):
    """Prefetch: a prompt queued behind the worker's own shows ``waiting`` until it starts."""
    comfy.execution_time_s = 4  # long enough to see the second job run before it ends
    comfy.pause()  # nothing starts until both prompts are queued
    stack.worker(comfy, WORKER_PREFETCH="1")
    stack.wait_polling(TASK)
    for n, job_id in enumerate(("pf-1", "pf-2")):
        submitted = stack.main("submit", "smoke", "--param", f"color={63 + n}", "--id", job_id)
        assert submitted.returncode == 0, submitted.stderr
        wait_until(lambda: len(comfy.submitted) == n + 1, timeout_s=30)  # noqa: B023

    def show(job_id: str) -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(stack.main("jobs", "show", job_id, "--json").stdout)
        return shown

    first, second = show("pf-1"), show("pf-2")
    assert (first["status"], second["status"]) == ("running", "waiting")
    assert second["run_s"] is None
    [submission] = stack.lh.checkpoints("pf-2")
    assert submission["queued_behind"] == 1 and submission["prompt_id"] == comfy.submitted[1]
    comfy.resume()
    wait_until(lambda: comfy.submitted[1] in comfy.started_times, timeout_s=30)
    wait_until(lambda: show("pf-2")["status"] == "running", timeout_s=30)
    assert show("pf-2")["run_s"] is not None
    started = {"record": "started", "prompt_id": comfy.submitted[1], "attempt": 0}
    assert stack.lh.checkpoints("pf-2") == [submission, started]
    assert [c.get("queued_behind") for c in stack.lh.checkpoints("pf-1")] == [0]  # nothing more
    assert stack.main("jobs", "cancel", "pf-2", "--wait").returncode == 0


@pytest.mark.slow
def test_parameters_are_checked_before_any_job_exists(stack, tmp_path):
    """A misspelt, mistyped or missing parameter exits 4 as ``run`` would, and starts nothing."""
    typo = stack.main("submit", "smoke", "--param", "colour=3")
    assert (
        typo.returncode == 4 and "unknown parameter 'colour' (did you mean 'color'?)" in typo.stderr
    )
    wrong = stack.main("submit", "smoke", "--param", "color=red")
    assert wrong.returncode == 4 and "parameter 'color'" in wrong.stderr
    out_of_range = stack.main("submit", "smoke", "--param", "blur_radius=40")
    assert out_of_range.returncode == 4
    assert "parameter 'blur_radius' must be at most 31, got 40" in out_of_range.stderr
    no_image = stack.main("submit", "image_resize")
    assert no_image.returncode == 4 and "--image image=PATH" in no_image.stderr
    bad_id = stack.main("submit", "smoke", "--id", "bad id!")
    assert bad_id.returncode == 2 and "letters, digits and hyphens" in bad_id.stderr
    listed = stack.main("jobs", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


@pytest.mark.slow
def test_the_urgent_lane_is_served_only_by_its_own_workers(stack, comfy, tmp_path):
    """register --lane urgent; a worker on the lane's TaskDef takes urgent jobs, the default one never."""
    stack.register("--lane", "urgent")
    assert stack.lh.has_task_def(URGENT_TASK) and stack.lh.has_wf_spec("comfyui-generate-urgent")
    with FakeComfyUI(tmp_path / "comfy-urgent") as urgent_comfy:
        stack.worker(comfy)
        stack.worker(urgent_comfy, LHW_TASK_NAME=URGENT_TASK)
        stack.wait_polling(TASK)
        stack.wait_polling(URGENT_TASK)
        urgent = stack.main("submit", "smoke", "--param", "color=9", "--lane", "urgent", "--wait")
        assert urgent.returncode == 0, urgent.stderr
        assert json.loads(urgent.stdout)["comfyui"]["base_url"] == urgent_comfy.base_url
        assert comfy.submitted == [] and len(urgent_comfy.submitted) == 1
        normal = stack.main("submit", "smoke", "--param", "color=10", "--wait")
        assert json.loads(normal.stdout)["comfyui"]["base_url"] == comfy.base_url
        assert len(urgent_comfy.submitted) == 1
    listed = json.loads(stack.main("jobs", "--lane", "urgent", "--json").stdout)
    assert [job["lane"] for job in listed] == ["urgent"]


@pytest.mark.slow
def test_download_from_the_object_store(stack, comfy, seaweed, tmp_path):
    """With WORKER_OUTPUT_URL=s3://..., --download reads the objects with the same AWS_* settings."""
    store = {"WORKER_OUTPUT_URL": f"s3://{seaweed.bucket}/jobs-test", **seaweed.config()}
    stack.worker(comfy, **store)
    stack.wait_polling(TASK)
    done = stack.main(
        "submit",
        "smoke",
        "--param",
        "color=11",
        "--wait",
        "--download",
        str(tmp_path / "dl"),
        **store,
    )
    assert done.returncode == 0, done.stderr
    [output] = json.loads(done.stdout)["outputs"]
    assert output["path"].startswith(f"s3://{seaweed.bucket}/jobs-test/")
    saved = tmp_path / "dl" / output["relative_path"]
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == output["sha256"]


def test_since_takes_ages_and_times():
    """--since 90m, 2d or an ISO time; anything else is a usage error."""
    assert abs(since("90m") - (datetime.now(UTC) - timedelta(minutes=90))) < timedelta(seconds=5)
    assert since("2026-11-01T10:00:00") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    with pytest.raises(Exception, match="neither an age"):
        since("yesterday")


def test_lane_names_map_to_task_defs_and_wf_specs():
    """A lane is a TaskDef and a WfSpec of its own; the default lane is the plain names."""
    assert lanes.task_name(TASK, "urgent") == URGENT_TASK == lanes.task_name(URGENT_TASK, "urgent")
    assert lanes.wf_spec_name("urgent") == "comfyui-generate-urgent"
    assert lanes.wf_spec_name(None) == lanes.wf_spec_name("default") == "comfyui-generate"
    assert lanes.lane_of("comfyui-generate-urgent") == "urgent"
    assert lanes.lane_of("comfyui-generate") == "default"


def test_the_table_has_one_line_per_job():
    """Columns line up; params and errors are cut to keep each job on one line."""
    job = Job.model_validate(
        {
            "id": "j1",
            "wf_spec": "comfyui-generate",
            "lane": "default",
            "status": "failed",
            "lh_status": "EXCEPTION",
            "created_at": "2026-01-01T00:00:00Z",
            "queued_s": 0,
            "total_s": 1.25,
            "template": "smoke",
            "params": {"prompt": "x" * 100},
            "error": {
                "name": "execution-failed",
                "message": "node 2 (ImageBlur) raised\nException: boom",
            },
        }
    )
    [header, row] = jobprint.table([job]).splitlines()
    assert header.split() == ["ID", "STATUS", "LANE", "TEMPLATE", "PARAMS", "DURATION", "ERROR"]
    assert row.startswith("j1  failed") and "1.2s" in row and "…" in row
    assert row.endswith("execution-failed: node 2 (ImageBlur) raised Exception: boom")
