"""Item 1: what Runner.run adds on top of ComfyUI's own execution time, per task.

``overhead = wall(Runner.run) - (ComfyUI finished - ComfyUI started)`` over sequential
zero-time smoke tasks, each a task's first attempt (``fresh``: nothing to adopt, so no
adoption check; a retry adds one /queue and one /history per earlier prompt). The part
before ComfyUI starts (validate, preflight, POST /prompt) and the part after it finishes
(detection, download, manifest) are reported too, so a miss points at its phase.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import settings_for, summary_ms
from benchmarks.target import Target
from comfyui_worker.run.execution import Runner
from comfyui_worker.workflow.request import RunRequest

WARMUP = 3


def measure(target: Target, work_dir: Path, tasks: int, *, fsync: bool) -> dict[str, Any]:
    """Run ``tasks`` sequential tasks through one Runner; summarise the overhead."""
    out_dir = work_dir / f"overhead-{'fsync' if fsync else 'nofsync'}"
    settings = settings_for(target.base_url, out_dir, COMFYUI_FSYNC=str(fsync).lower())
    prefix = f"bench/overhead-{'f' if fsync else 'n'}"
    marks: list[tuple[str, float, float]] = []
    with Runner(settings) as runner:
        for i in range(WARMUP + tasks):
            prompt_id = str(uuid.uuid4())
            request = RunRequest(
                graph=target.graph(prefix), prompt_id=prompt_id, run_key=f"task-{i}", fresh=True
            )
            start = time.monotonic()
            runner.run(request)
            end = time.monotonic()
            if i >= WARMUP:
                marks.append((prompt_id, start, end))
        spans = target.times(runner.client, [pid for pid, _, _ in marks])
    shutil.rmtree(out_dir, ignore_errors=True)
    walls = [end - start for _, start, end in marks]
    comfy = [spans[pid].finished - spans[pid].started for pid, _, _ in marks]
    before = [spans[pid].started - start for pid, start, _ in marks]
    after = [end - spans[pid].finished for pid, _, end in marks]
    overhead = [w - c for w, c in zip(walls, comfy, strict=True)]
    return {
        "overhead": summary_ms(overhead),
        "wall": summary_ms(walls),
        "comfy_execution": summary_ms(comfy),
        "before_start": summary_ms(before),
        "after_finish": summary_ms(after),
    }
