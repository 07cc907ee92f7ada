"""Item 6: does saving a big output keep the GPU waiting? Prefetch off and on.

Through LittleHorse with the real ``main.py worker`` and the fake ComfyUI: task A makes
one big output (FakeBigOutput, executing for a second); once ComfyUI has it, task B, which
sleeps in ComfyUI, is scheduled. The GPU idle gap is from A finishing to B starting,
on the fake's clock. Without prefetch it includes A's whole
download; with prefetch B is already queued, so the download overlaps B's execution
and the gap shrinks to ComfyUI's own.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import big_graph, sleep_graph
from benchmarks.fakeproc import FakeProcess
from benchmarks.lhworker import TASK, running_worker, wait_reports
from benchmarks.target import next_color
from comfyui_worker.worker.task import prompt_id_for

SLEEP_S = 3.0
A_EXECUTION_S = 1.0


def measure(fake: FakeProcess, work_dir: Path, size: int) -> dict[str, Any]:
    """The A-finish -> B-start gap and A's download time, for prefetch 0 and 1."""
    return {
        "size_bytes": size,
        **{f"prefetch_{p}": _pair(fake, work_dir, size, p) for p in (0, 1)},
    }


def _pair(fake: FakeProcess, work_dir: Path, size: int, prefetch: int) -> dict[str, float]:
    out_dir, log_path = work_dir / f"overlap-out-{prefetch}", work_dir / f"overlap-{prefetch}.log"
    env = {"COMFYUI_MAX_OUTPUT_BYTES": str(size * 2), "WORKER_PREFETCH": str(prefetch)}
    with running_worker(fake.base_url, out_dir, log_path, **env) as lh:
        tag = uuid.uuid4().hex[:8]
        big = ("wf-big-" + tag, uuid.uuid4().hex)
        after = ("wf-after-" + tag, uuid.uuid4().hex)
        fake.set("execution_time_s", A_EXECUTION_S)  # B has time to queue up behind A
        try:
            graph_a = big_graph(size, f"bench/overlap-{tag}")
            lh.schedule(TASK, [graph_a], wf_run_id=big[0], task_guid=big[1])
            prompt_a = prompt_id_for(*big, 0, lh.scheduled_at_ns(big[1], wf_run_id=big[0]))
            fake.wait_received(prompt_a)
            graph_b = sleep_graph(next_color(), SLEEP_S)
            lh.schedule(TASK, [graph_b], wf_run_id=after[0], task_guid=after[1])
            prompt_b = prompt_id_for(*after, 0, lh.scheduled_at_ns(after[1], wf_run_id=after[0]))
            wait_reports(lh, [big[1], after[1]], timeout_s=120)
        finally:
            fake.set("execution_time_s", 0.0)
        report = next(r for r in lh.reports if r.task_run_id.task_guid == big[1])
    download_ms = json.loads(report.output.json_obj)["timings_ms"]["downloading"]
    times = fake.times([prompt_a, prompt_b])
    a, b = times[prompt_a], times[prompt_b]
    return {"gap_ms": (b.started - a.finished) * 1000, "download_ms": float(download_ms)}
