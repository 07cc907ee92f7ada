"""Jobs never see each other's inputs or outputs: not with prefetch, not with a reused job id.

End to end through WfRuns of ``comfyui-generate`` (whose task guid is ``0-1`` in every
WfRun), the real ``main.py worker`` and ``main.py submit``, against the fake ComfyUI,
whose LoadImage reads the uploaded file only when the node runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from littlehorse.model import DeleteWfRunRequest, WfRunId
from PIL import Image

from tests.conftest import wait_until
from tests.stack import Stack

pytestmark = pytest.mark.slow  # worker subprocesses and WfRuns: seconds each

TASK = "execute-comfyui-workflow"
LOAD_AND_SAVE = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "iso"}},
}


def png(path: Path, side: int) -> Path:
    Image.new("RGB", (side, side), (side, 0, 0)).save(path)
    return path


def job(stack: Stack, job_id: str) -> dict[str, Any]:
    shown = stack.main("jobs", "show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    detail: dict[str, Any] = json.loads(shown.stdout)
    return detail


def finished(stack: Stack, job_id: str) -> dict[str, Any]:
    """Wait for the job to end; its record."""
    wait_until(lambda: job(stack, job_id)["status"] not in ("queued", "running"), timeout_s=60)
    return job(stack, job_id)


@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_queued_jobs_each_run_on_their_own_input_image(stack, comfy, tmp_path, prefetch):
    """Prompts queued behind each other keep their own uploads: no job reads another's image."""
    graph = tmp_path / "load_and_save.json"
    graph.write_text(json.dumps(LOAD_AND_SAVE))
    sides = {f"iso-{prefetch}-{n}": side for n, side in enumerate((16, 40, 24))}
    comfy.pause()  # nothing starts until every prompt the worker may queue is queued
    stack.worker(comfy, WORKER_PREFETCH=str(prefetch))
    stack.wait_polling(TASK)
    for job_id, side in sides.items():
        image = png(tmp_path / f"{job_id}.png", side)
        submitted = stack.main("submit", str(graph), "--image", f"image={image}", "--id", job_id)
        assert submitted.returncode == 0, submitted.stderr
    wait_until(lambda: len(comfy.submitted) == 1 + prefetch, timeout_s=30)
    comfy.resume()
    for job_id, side in sides.items():
        record = finished(stack, job_id)
        assert record["status"] == "completed", record
        [output] = record["outputs"]
        with Image.open(output["path"]) as made:
            assert made.size == (side, side), f"{job_id} ran on another job's image"
    names = [upload["name"] for upload in comfy.uploads]
    assert len(set(names)) == len(sides)


def test_a_reused_job_id_never_returns_the_old_jobs_output(stack, comfy):
    """Delete a job, submit its id again: the new run's own output, though ComfyUI kept the old."""
    stack.worker(comfy)
    stack.wait_polling(TASK)
    first = stack.main("submit", "smoke", "--param", "color=111", "--id", "reuse-1", "--wait")
    assert first.returncode == 0, first.stderr
    old = json.loads(first.stdout)
    stack.lh.stub.DeleteWfRun(DeleteWfRunRequest(id=WfRunId(id="reuse-1")))
    wait_until(lambda: stack.lh.wf_run("reuse-1") is None)
    comfy.pause()  # the new prompt waits queued while the worker looks at /history
    since = len(comfy.requests)
    again = stack.main("submit", "smoke", "--param", "color=222", "--id", "reuse-1")
    assert again.returncode == 0, again.stderr
    wait_until(lambda: len(comfy.submitted) == 2, timeout_s=30)
    looked = ("GET", f"/history/{comfy.submitted[1]}")
    wait_until(lambda: looked in comfy.requests[since:], timeout_s=30)
    comfy.resume()
    record = finished(stack, "reuse-1")
    assert record["status"] == "completed", record
    new = record["result"]
    assert new["prompt_id"] != old["prompt_id"] and new["params"]["color"] == 222
    assert new["outputs"][0]["sha256"] != old["outputs"][0]["sha256"]
    assert comfy.executed == [old["prompt_id"], new["prompt_id"]]
