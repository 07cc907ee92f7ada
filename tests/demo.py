"""Try the whole worker on any machine: ``uv run python -m tests.demo``.

Starts the fake ComfyUI and a real LittleHorse server (1.2.1 from Maven Central, with
its Kafka; the first run downloads it into ``.cache/``) on 127.0.0.1, or the fake
LittleHorse when a real one cannot be set up here (one line says why). Registers the
TaskDef and WfSpec with ``main.py register``, runs the real ``main.py worker``, starts
a few WfRuns of ``comfyui-generate`` the way ``lhctl run`` would, prints what each
attempt reported, submits a job with ``main.py submit --wait`` and lists it with
``main.py jobs``, then stops the worker with SIGTERM (a graceful drain). Outputs land
in ``./output/demo``.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from littlehorse import to_variable_value
from littlehorse.model import RunWfRequest, TaskAttempt, TaskStatus

from fakes.comfyui import FakeComfyUI
from fakes.lhserver import running_littlehorse
from fakes.littlehorse import FakeLittleHorse
from fakes.littlehorses import LittleHorseUnderTest
from tests.graphs import PNG_1PX_BASE64

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "output" / "demo"
TASK = "execute-comfyui-workflow"
START_TIMEOUT_S = 180.0  # a real LittleHorse that takes longer is not worth the wait
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


def describe(attempt: TaskAttempt) -> str:
    """One readable paragraph for a task attempt's report."""
    if attempt.status == TaskStatus.TASK_SUCCESS:
        result = json.loads(attempt.output.json_obj)
        files = ", ".join(o["relative_path"] for o in result["outputs"])
        return f"  TASK_SUCCESS prompt {result['prompt_id']}\n  files: {files}\n  timings_ms: {result['timings_ms']}"
    if attempt.status == TaskStatus.TASK_EXCEPTION:
        return f"  TASK_EXCEPTION {attempt.exception.name}: {attempt.exception.message}"
    status = TaskStatus.Name(attempt.status)  # type: ignore[attr-defined]
    return f"  {status}: {attempt.error.message.strip()}"


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


@contextmanager
def littlehorse(choice: str, work_dir: Path) -> Iterator[LittleHorseUnderTest]:
    """The real server if it can be had (``auto``: within START_TIMEOUT_S), else the fake."""
    if choice != "fake":
        try:
            with running_littlehorse(work_dir, start_timeout_s=START_TIMEOUT_S) as real:
                print(
                    f"real LittleHorse {real.version} at {real.address} (up in {real.start_seconds:.0f} s)"
                )
                lh = LittleHorseUnderTest("real", real)
                yield lh
                lh.close()
                return
        except RuntimeError as exc:
            if choice == "real":
                raise
            print(
                f"no real LittleHorse here ({str(exc).splitlines()[0][:200]}); using the fake one"
            )
    with FakeLittleHorse() as fake:
        print(f"fake LittleHorse at {fake.address}")
        lh = LittleHorseUnderTest("fake", fake)
        yield lh
        lh.close()


def main(argv: list[str] | None = None) -> int:
    """Run the demo (``--output-dir DIR`` to put outputs elsewhere); return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tests.demo", description=__doc__)
    parser.add_argument("--output-dir", type=Path, default=OUTPUT)
    parser.add_argument(
        "--littlehorse",
        choices=("auto", "real", "fake"),
        default="auto",
        help="auto: the real server if it starts here, else the fake",
    )
    args = parser.parse_args(argv)
    output = args.output_dir.resolve()
    output.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as scratch,
        FakeComfyUI(Path(scratch, "comfy")) as comfy,
        littlehorse(args.littlehorse, Path(scratch, "littlehorse")) as lh,
    ):
        env = {
            "PATH": os.environ.get("PATH", ""),
            **lh.env(),
            "COMFYUI_BASE_URL": comfy.base_url,
            "COMFYUI_OUTPUT_DIR": str(output),
            "WORKER_HTTP_PORT": "0",
            "WORKER_LOG_LEVEL": "warning",
        }
        print(f"fake ComfyUI at {comfy.base_url}")
        subprocess.run([sys.executable, "main.py", "register"], cwd=ROOT, env=env, check=True)
        print(f"registered TaskDef {TASK!r} and WfSpec 'comfyui-generate'")
        worker = subprocess.Popen([sys.executable, "main.py", "worker"], cwd=ROOT, env=env)
        try:
            for title, workflow in TASKS:
                wf_run_id = f"demo-{uuid.uuid4().hex[:8]}"
                variables = {"workflow": to_variable_value(workflow)}
                lh.stub.RunWf(
                    RunWfRequest(wf_spec_name="comfyui-generate", id=wf_run_id, variables=variables)
                )
                lh.wait_wf_run(wf_run_id, timeout_s=120)
                attempts = lh.wait_attempts(wf_run_id, _reported).attempts
                print(f"\n{title} (WfRun {wf_run_id}):\n{describe(attempts[-1])}")
            show_jobs(env)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
        print(f"\nworker drained and exited with {code}; outputs are under {output}")
        return code


def _reported(attempts: list[TaskAttempt]) -> bool:
    """The last attempt has its result (the real server's reads may lag a moment)."""
    return bool(attempts) and attempts[-1].status not in (
        TaskStatus.TASK_SCHEDULED,
        TaskStatus.TASK_RUNNING,
        TaskStatus.TASK_PENDING,
    )


if __name__ == "__main__":
    raise SystemExit(main())
