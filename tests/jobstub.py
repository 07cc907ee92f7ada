"""A fake LittleHorse running comfyui-generate WfRuns with a stand-in task, for the job tests.

The task is a real ``LHTaskWorker`` on the fake (real gRPC), whose behaviour the job's
``params.mode`` picks: ``ok`` (a result with one PNG under the output dir), ``fail``
(execution-failed at node 2), ``down`` (TASK_FAILED every attempt), ``flaky`` (fails
once, then succeeds), ``hold`` (runs until the WfRun is stopped, then reports
execution-interrupted, as the real worker does) and ``escape`` (a result whose path
lies outside the output dir).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from pathlib import Path
from typing import Any

from littlehorse import create_task_def, create_workflow_spec, to_variable_value
from littlehorse.exceptions import LHTaskException
from littlehorse.model import LHStatus
from littlehorse.worker import LHTaskWorker, WorkerContext

from comfyui_worker.jobs.client import Jobs
from comfyui_worker.lh.api import LittleHorse
from comfyui_worker.lh.wfspec import WF_SPEC_NAME, build_workflow
from comfyui_worker.settings import DeadlineSettings
from fakes.littlehorse import FakeLittleHorse, WorkerThread, close_sync_channels
from tests.graphs import PNG_1PX_BASE64

TASK = "execute-comfyui-workflow"
DEADLINES = DeadlineSettings.model_validate({"COMFYUI_HISTORY_TIMEOUT_SEC": "600"})
PNG = base64.b64decode(PNG_1PX_BASE64)
MODES = ["ok", "fail", "down", "flaky", "hold", "escape"]
# the page checks parameters against a template before a job exists: these templates
# declare the stub's ``mode`` (the stub task reads it; the graphs themselves never run)
STUB_TEMPLATES: dict[str, dict[str, Any]] = {
    "stub": {
        "_params": {
            "mode": {"type": "string", "default": "ok", "choices": MODES, "targets": ["2.x"]},
            "width": {"type": "int", "default": 8, "min": 1, "max": 64, "targets": ["1.width"]},
        },
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "x": "ok"}},
    },
    "stub_image": {
        "_params": {
            "mode": {"type": "string", "default": "ok", "choices": MODES, "targets": ["2.x"]},
            "image": {"type": "image", "targets": ["1.image"]},
        },
        "1": {"class_type": "LoadImage", "inputs": {"image": ""}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "x": "ok"}},
    },
}
NODE_ERROR = {
    "error": "execution-failed",
    "message": "node 2 (ImageBlur) raised Exception: boom",
    "node_id": "2",
    "node_type": "ImageBlur",
    "exception_type": "Exception",
    "exception_message": "boom",
}


class StubLittleHorse:
    """The fake LittleHorse, the WfSpec, a stand-in worker, and ``Jobs`` on top."""

    def __init__(self, output_dir: Path, elsewhere: Path) -> None:
        # 1800 s task timeouts become 18 s, the 5 s first backoff 50 ms.
        self.lh = FakeLittleHorse(time_scale=1e-2)
        self.output_dir = output_dir
        self.elsewhere = elsewhere
        self.config = self.lh.config()
        self.worker: WorkerThread | None = None

    def __enter__(self) -> StubLittleHorse:
        self.lh.start()
        self.config = self.lh.config()
        fn = self._task_function()
        create_task_def(fn, TASK, self.config)
        self.register(WF_SPEC_NAME)
        self.worker = WorkerThread(LHTaskWorker(fn, TASK, self.lh.config())).start()
        self.jobs = Jobs(LittleHorse(self.config, self.lh.address))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.worker is not None:
            self.worker.stop()
        close_sync_channels(self.config)
        self.lh.stop()

    def register(self, wf_spec: str) -> None:
        """Another WfSpec on the same TaskDef (a lane, or a list of one test's own)."""
        create_workflow_spec(build_workflow(DEADLINES, TASK, name=wf_spec), self.config)

    def wait_done(self, job_id: str, timeout_s: float = 30) -> None:
        """Until the WfRun ended, or its entrypoint halted (a cancelled job)."""

        def done() -> bool:
            run = self.lh.wf_run(job_id)
            return run is not None and (
                run.status in (LHStatus.COMPLETED, LHStatus.EXCEPTION, LHStatus.ERROR)
                or run.thread_runs[0].status == LHStatus.HALTED
            )

        self.lh.wait_for(done, timeout_s, f"job {job_id} to end")

    def wait_running(self, job_id: str, timeout_s: float = 30) -> None:
        """Until a ``hold`` job's task recorded its prompt (before that it is only waiting)."""
        self.lh.wait_for(
            lambda: self.lh.task_run("0-1", wf_run_id=job_id).total_checkpoints > 0,
            timeout_s,
            f"job {job_id} to record its prompt",
        )

    def _task_function(self) -> Any:
        async def execute_comfyui_workflow(
            workflow: dict[str, Any], ctx: WorkerContext
        ) -> dict[str, Any]:
            mode = (workflow.get("params") or {}).get("mode", "ok")
            ctx.log(f"stub {mode}, attempt {ctx.attempt_number}")
            if mode == "fail":
                raise LHTaskException(
                    "execution-failed", NODE_ERROR["message"], to_variable_value(NODE_ERROR)
                )
            if mode == "down" or (mode == "flaky" and ctx.attempt_number == 0):
                raise RuntimeError("comfyui-unavailable: ComfyUI at http://gpu-1 is unreachable")
            if mode == "hold":  # its prompt "runs": recorded as the worker records one
                submission = {"comfyui_url": "http://gpu-1", "prompt_id": "p", "worker_id": "stub"}
                await ctx.execute_and_checkpoint(
                    lambda _ctx: {**submission, "attempt": ctx.attempt_number}
                )
                await asyncio.to_thread(self._wait_stopped, ctx.wf_run_id.id)
                content = {"error": "execution-interrupted", "message": "the job was cancelled"}
                raise LHTaskException(
                    "execution-interrupted", content["message"], to_variable_value(content)
                )
            return self._result(ctx.wf_run_id.id, workflow, escape=mode == "escape")

        return execute_comfyui_workflow

    def _wait_stopped(self, wf_run_id: str) -> None:
        def halting() -> bool:
            run = self.lh.wf_run(wf_run_id)
            return run is not None and run.thread_runs[0].status == LHStatus.HALTING

        self.lh.wait_for(halting, 30, f"{wf_run_id} to be stopped")

    def _result(self, wf_run_id: str, workflow: dict[str, Any], *, escape: bool) -> dict[str, Any]:
        root = self.elsewhere if escape else self.output_dir
        path = root / wf_run_id / "0-1" / "out" / f"{uuid.uuid4().hex[:8]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG)
        output = {
            "node_id": "3",
            "key": "images",
            "filename": path.name,
            "subfolder": "out",
            "comfy_type": "output",
            "path": str(path),
            "relative_path": f"out/{path.name}",
            "size_bytes": len(PNG),
            "sha256": hashlib.sha256(PNG).hexdigest(),
            "media_type": "image/png",
        }
        return {
            "status": "success",
            "outputs": [output],
            "template": workflow.get("template"),
            "params": workflow.get("params", {}),
            "timings_ms": {  # as a worker measures: ran = executing + downloading
                "queued": 5,
                "executing": 200,
                "downloading": 50,
                "total": 260,
                "comfy_execution": 190,
            },
        }
