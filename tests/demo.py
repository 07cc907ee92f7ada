"""Try the whole worker on any machine: ``uv run python -m tests.demo``.

Starts the fake ComfyUI and the fake LittleHorse on 127.0.0.1, registers the
TaskDef and WfSpec with ``main.py register``, runs the real ``main.py worker``,
sends it a few tasks the way a WfRun would, prints what LittleHorse receives,
submits a job (a WfRun) with ``main.py submit --wait`` and lists it with
``main.py jobs``, then stops the worker with SIGTERM (a graceful drain). Outputs
land in ``./output/demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from littlehorse.model import ReportTaskRun, TaskStatus

from fakes.comfyui import FakeComfyUI
from fakes.littlehorse import FakeLittleHorse
from tests.graphs import PNG_1PX_BASE64

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "output" / "demo"
TASK = "execute-comfyui-workflow"
TASKS: list[tuple[str, Any]] = [
    ("smoke.json as lhctl would send it", json.loads((ROOT / "workflows/smoke.json").read_text())),
    ("template 'smoke' with a parameter", {"template": "smoke", "params": {"color": 255}}),
    (
        "template 'image_resize' with an input image",
        {
            "template": "image_resize",
            "params": {"width": 32, "height": 32},
            "images": [{"name": "image", "base64": PNG_1PX_BASE64}],
        },
    ),
    ("a UI-format export (a business error)", {"nodes": [], "links": [], "version": 0.4}),
    ("a typo in a parameter name", {"template": "smoke", "params": {"colour": 1}}),
]


def describe(report: ReportTaskRun) -> str:
    """One readable paragraph for a task report."""
    if report.status == TaskStatus.TASK_SUCCESS:
        result = json.loads(report.output.json_obj)
        files = ", ".join(o["relative_path"] for o in result["outputs"])
        return f"  TASK_SUCCESS prompt {result['prompt_id']}\n  files: {files}\n  timings_ms: {result['timings_ms']}"
    if report.status == TaskStatus.TASK_EXCEPTION:
        return f"  TASK_EXCEPTION {report.exception.name}: {report.exception.message}"
    return f"  TASK_FAILED: {report.error.message.strip().splitlines()[-1]}"


def show_jobs(env: dict[str, str]) -> None:
    """``main.py submit --wait`` then ``main.py jobs``, as a user would type them."""
    for args in (["submit", "smoke", "--param", "color=65280", "--wait"], ["jobs"]):
        done = subprocess.run(
            [sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        print(f"\n$ main.py {' '.join(args)}   (exit {done.returncode})")
        for line in done.stderr.splitlines():
            print(f"  {line}")
        if args[0] == "submit" and done.returncode == 0:
            result = json.loads(done.stdout)
            files = ", ".join(o["relative_path"] for o in result["outputs"])
            print(f"  result JSON on stdout: status {result['status']}, files: {files}")
        else:
            print("\n".join(f"  {line}" for line in done.stdout.splitlines()))


def main(argv: list[str] | None = None) -> int:
    """Run the demo (``--output-dir DIR`` to put outputs elsewhere); return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tests.demo", description=__doc__)
    parser.add_argument("--output-dir", type=Path, default=OUTPUT)
    output = parser.parse_args(argv).output_dir.resolve()
    output.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as comfy_root,
        FakeComfyUI(Path(comfy_root)) as comfy,
        FakeLittleHorse() as lh,
    ):
        env = {
            "PATH": os.environ.get("PATH", ""),
            **lh.env(),
            "COMFYUI_BASE_URL": comfy.base_url,
            "COMFYUI_OUTPUT_DIR": str(output),
            "WORKER_HTTP_PORT": "0",
            "WORKER_LOG_LEVEL": "warning",
        }
        print(f"fake ComfyUI at {comfy.base_url}, fake LittleHorse at {lh.address}")
        subprocess.run([sys.executable, "main.py", "register"], cwd=ROOT, env=env, check=True)
        print(f"registered TaskDef {TASK!r} and WfSpec 'comfyui-generate'")
        worker = subprocess.Popen([sys.executable, "main.py", "worker"], cwd=ROOT, env=env)
        try:
            lh.wait_polling(timeout_s=30)
            for title, workflow in TASKS:
                guid = uuid.uuid4().hex
                lh.schedule(TASK, [workflow], wf_run_id="demo", task_guid=guid)
                print(f"\n{title}:\n{describe(lh.wait_report(guid, timeout_s=60))}")
            show_jobs(env)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
        print(f"\nworker drained and exited with {code}; outputs are under {output}")
        return code


if __name__ == "__main__":
    raise SystemExit(main())
