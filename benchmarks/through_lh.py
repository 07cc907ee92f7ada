"""Item 5: the GPU idle gap through LittleHorse, with prefetch off and on, against its limit.

The real ``main.py worker`` runs between a fake LittleHorse and a ComfyUI (the fake's
process, or a real one with ``--comfyui-url``) on ~100 ms workflows (a turbo/LCM model's
cost: the fake sleeps 100 ms; a real ComfyUI blurs a 512x512 image). N tasks are
scheduled at once; for each
pair of consecutive prompts the gap is the time from ComfyUI finishing one to starting
the next, read from ComfyUI's own clock (the fake's monotonic times, or a real server's
``execution_start``/``execution_success`` history timestamps). The same number of
prompts submitted back to back straight to ComfyUI gives the limit: ComfyUI's own gap
when its queue is never empty. Run for ``WORKER_PREFETCH`` 0 and 1, in one run.
"""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import settings_for, summary_ms
from benchmarks.fakeproc import PromptTimes
from benchmarks.lhworker import TASK, running_worker, wait_reports
from benchmarks.target import Target
from comfyui_worker.client import ComfyClient
from comfyui_worker.lh_worker import prompt_id_for
from fakes.littlehorse import FakeLittleHorse

RESOLUTION_MS = 1.0  # ComfyUI's history timestamps are whole milliseconds
WARMUP = 3


def measure(target: Target, work_dir: Path, tasks: int) -> dict[str, Any]:
    """Gaps with prefetch off and on through LittleHorse, and ComfyUI's own, queued."""
    results: dict[str, Any] = {"tasks": tasks}
    with ComfyClient(settings_for(target.base_url, work_dir / "limit-out")) as client:
        for prefetch in (0, 1):
            results[f"prefetch_{prefetch}"] = _through_worker(
                target, client, work_dir, tasks, prefetch
            )
        results["queued_limit"] = _queued(target, client, tasks)
    limit = max(results["queued_limit"]["gap_to_started"]["p50_ms"], RESOLUTION_MS)
    for prefetch in (0, 1):
        gap = results[f"prefetch_{prefetch}"]["gap_to_started"]["p50_ms"]
        results[f"prefetch_{prefetch}"]["ratio_to_limit_p50"] = gap / limit
    return results


def _through_worker(
    target: Target, client: ComfyClient, work_dir: Path, tasks: int, prefetch: int
) -> dict[str, Any]:
    out_dir, log_path = work_dir / f"lh-out-{prefetch}", work_dir / f"lh-worker-{prefetch}.log"
    with running_worker(target.base_url, out_dir, log_path, WORKER_PREFETCH=str(prefetch)) as lh:
        wait_reports(lh, [guid for _, guid in _schedule(lh, target, WARMUP, "warm")], 60)
        start = time.monotonic()
        scheduled = _schedule(lh, target, tasks, "bench")
        wait_reports(lh, [guid for _, guid in scheduled], timeout_s=60 + tasks)
        end = time.monotonic()
        prompt_ids = [
            prompt_id_for(wf, guid, 0, lh.scheduled_at_ns(guid, wf_run_id=wf))
            for wf, guid in scheduled
        ]
    figures = _gaps(target.times(client, prompt_ids))
    return {**figures, "elapsed_s": end - start, "tasks_per_s": tasks / (end - start)}


def _queued(target: Target, client: ComfyClient, tasks: int) -> dict[str, Any]:
    """Every prompt submitted at once, straight to ComfyUI: its own gap, the limit."""
    prompt_ids = [str(uuid.uuid4()) for _ in range(tasks)]
    for prompt_id in prompt_ids:
        client.submit_once(
            target.fast_graph("bench/queued"), prompt_id=prompt_id, client_id="bench"
        )
    deadline = time.monotonic() + 60 + tasks
    while client.history(prompt_ids[-1]) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("queued prompts did not finish")
        time.sleep(0.05)
    return _gaps(target.times(client, prompt_ids))


def _gaps(times: dict[str, PromptTimes]) -> dict[str, Any]:
    spans = sorted(times.values(), key=lambda t: t.started)
    return {
        "gap_to_started": summary_ms(
            [b.started - a.finished for a, b in itertools.pairwise(spans)]
        ),
        "execution": summary_ms([t.finished - t.started for t in spans]),
    }


def _schedule(lh: FakeLittleHorse, target: Target, count: int, tag: str) -> list[tuple[str, str]]:
    scheduled = []
    for i in range(count):
        wf_run_id, guid = f"{tag}-{i}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        lh.schedule(TASK, [target.fast_graph("bench/lh")], wf_run_id=wf_run_id, task_guid=guid)
        scheduled.append((wf_run_id, guid))
    return scheduled
