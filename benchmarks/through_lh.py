"""Item 5: the real ``main.py worker`` process between a fake LittleHorse and a fake ComfyUI.

N tasks are scheduled at once while the worker polls. Throughput is tasks per second
from scheduling to the last report; the GPU idle gap is, for each pair of consecutive
prompts, the time from ComfyUI finishing one to starting (and receiving) the next.
Also reported: how long scheduling took, when the first prompt reached ComfyUI, and
how long after the last prompt finished every report was in.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from littlehorse.model import TaskStatus

from benchmarks.common import ROOT, WORKFLOWS, smoke_graph, summary_ms
from benchmarks.fakeproc import FakeProcess
from benchmarks.target import next_color
from comfyui_worker.lh_worker import prompt_id_for
from fakes.littlehorse import FakeLittleHorse

TASK = "execute-comfyui-workflow"
WARMUP = 3


def measure(fake: FakeProcess, work_dir: Path, tasks: int) -> dict[str, Any]:
    """Schedule ``tasks`` at once; time them through LittleHorse, worker and ComfyUI."""
    log_path = work_dir / "lh-worker.log"
    with FakeLittleHorse() as lh, log_path.open("ab") as log:
        env = {
            "PATH": os.environ.get("PATH", ""),
            **lh.env(),
            "COMFYUI_BASE_URL": fake.base_url,
            "COMFYUI_OUTPUT_DIR": str(work_dir / "lh-out"),
            "COMFYUI_WORKFLOWS_DIR": str(WORKFLOWS),
            "WORKER_HTTP_PORT": "0",
            "WORKER_LOG_LEVEL": "warning",
            "WORKER_LOG_FORMAT": "json",
        }
        proc = subprocess.Popen(
            [sys.executable, "main.py", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        try:
            lh.wait_polling(timeout_s=60)
            _run_batch(lh, WARMUP, "warm")
            start = time.monotonic()
            scheduled = _schedule(lh, tasks, "bench")
            scheduled_at = time.monotonic()
            _wait_reports(lh, [guid for _, guid in scheduled], timeout_s=60 + tasks)
            end = time.monotonic()
        except Exception as exc:
            raise RuntimeError(f"{exc} (worker log: {log_path})") from exc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    prompt_ids = [prompt_id_for(wf, guid, 0) for wf, guid in scheduled]
    spans = sorted(fake.times(prompt_ids).values(), key=lambda t: t.started)
    to_received = [b.received - a.finished for a, b in itertools.pairwise(spans)]
    to_started = [b.started - a.finished for a, b in itertools.pairwise(spans)]
    return {
        "tasks": tasks,
        "elapsed_s": end - start,
        "tasks_per_s": tasks / (end - start),
        "scheduling_ms": (scheduled_at - start) * 1000,
        "first_prompt_received_ms": (spans[0].received - start) * 1000,
        "last_finish_to_reported_ms": (end - spans[-1].finished) * 1000,
        "gap_to_started": summary_ms(to_started),
        "gap_to_received": summary_ms(to_received),
    }


def _schedule(lh: FakeLittleHorse, count: int, tag: str) -> list[tuple[str, str]]:
    scheduled = []
    for i in range(count):
        wf_run_id, guid = f"{tag}-{i}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        graph = smoke_graph(next_color(), "bench/lh")
        lh.schedule(TASK, [graph], wf_run_id=wf_run_id, task_guid=guid)
        scheduled.append((wf_run_id, guid))
    return scheduled


def _run_batch(lh: FakeLittleHorse, count: int, tag: str) -> None:
    _wait_reports(lh, [guid for _, guid in _schedule(lh, count, tag)], timeout_s=60)


def _wait_reports(lh: FakeLittleHorse, guids: list[str], timeout_s: float) -> None:
    wanted = set(guids)

    def done() -> bool:
        return len({r.task_run_id.task_guid for r in lh.reports} & wanted) == len(wanted)

    lh.wait_for(done, timeout_s, f"{len(wanted)} task reports")
    failed = [
        r
        for r in lh.reports
        if r.task_run_id.task_guid in wanted and r.status != TaskStatus.TASK_SUCCESS
    ]
    if failed:
        raise RuntimeError(f"{len(failed)} tasks did not succeed, e.g. {failed[0]}")
