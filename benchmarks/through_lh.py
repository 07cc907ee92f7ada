"""Item 5: the GPU idle gap through LittleHorse (fake and real), prefetch off and on.

The real ``main.py worker`` runs between a LittleHorse (the fake, and the real server
1.2.1 in a tenant of its own) and a ComfyUI (the fake's process, or a real one with
``--comfyui-url``) on ~100 ms workflows (a turbo/LCM model's cost: the fake sleeps
100 ms; a real ComfyUI blurs a 512x512 image). N WfRuns of ``comfyui-generate`` are
started at once; for each pair of consecutive prompts the gap is the time from ComfyUI
finishing one to starting the next, read from ComfyUI's own clock (the fake's monotonic
times, or a real server's ``execution_start``/``execution_success`` history
timestamps). The same number of prompts submitted back to back straight to ComfyUI
gives the limit: ComfyUI's own gap when its queue is never empty. Each run also reports
the worker's LittleHorse round trips per task (claim, checkpoint, report).

Short tasks (~10 ms: the fake sleeps 10 ms; a real ComfyUI blurs a 320x320 image) run
with prefetch 0, 1 and 2, the worker logging each step (``WORKER_LOG_LEVEL=info``), so
the cycle from ComfyUI finishing one prompt to the next being queued is broken into
phases (``cycle.py``).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import cycle
from benchmarks.common import Graph, settings_for, summary_ms
from benchmarks.fakeproc import PromptTimes
from benchmarks.jobstack import ROUND_TRIPS, JobStack, job_stack, p50_ms
from benchmarks.target import Target
from comfyui_worker.comfy.client import ComfyClient
from fakes.lhserver import running_littlehorse
from fakes.littlehorse import FakeLittleHorse
from fakes.littlehorses import LittleHorseUnderTest, new_tenant

RESOLUTION_MS = 1.0  # ComfyUI's history timestamps are whole milliseconds
WARMUP = 3
SERVERS = ("fake", "real")
FAST_DEPTHS = (0, 1)
SHORT_DEPTHS = (0, 1, 2)


def measure(target: Target, work_dir: Path, tasks: int, servers: tuple[str, ...]) -> dict[str, Any]:
    """Gaps with prefetch off and on through each LittleHorse, and ComfyUI's own, queued."""
    results: dict[str, Any] = {"tasks": tasks}
    with ComfyClient(settings_for(target.base_url, work_dir / "limit-out")) as client:
        results["queued_limit"] = _queued(target, client, tasks, target.fast_graph)
        results["short_queued_limit"] = _queued(target, client, tasks, target.short_graph)
        for kind in servers:
            with _littlehorse(kind, work_dir) as server:
                results[kind] = {"server": server.version_label}
                for short, depths in ((False, FAST_DEPTHS), (True, SHORT_DEPTHS)):
                    limit_key = "short_queued_limit" if short else "queued_limit"
                    limit = max(results[limit_key]["gap_to_started"]["p50_ms"], RESOLUTION_MS)
                    for prefetch in depths:
                        run = _through_worker(
                            server, target, client, work_dir, tasks, prefetch, short=short
                        )
                        run["ratio_to_limit_p50"] = run["gap_to_started"]["p50_ms"] / limit
                        name = f"short_prefetch_{prefetch}" if short else f"prefetch_{prefetch}"
                        results[kind][name] = run
    return results


class _Server:
    """One LittleHorse for the item; a fresh tenant (real) or server (fake) per run."""

    def __init__(self, kind: str, real: Any = None) -> None:
        self.kind = kind
        self.real = real
        self.version_label = f"real LittleHorse {real.version}" if real else "fake LittleHorse"

    @contextmanager
    def fresh(self) -> Iterator[LittleHorseUnderTest]:
        if self.real is not None:
            lh = LittleHorseUnderTest("real", self.real, new_tenant(self.real))
            yield lh
            lh.close()
            return
        with FakeLittleHorse() as fake:
            lh = LittleHorseUnderTest("fake", fake)
            yield lh
            lh.close()


@contextmanager
def _littlehorse(kind: str, work_dir: Path) -> Iterator[_Server]:
    if kind == "fake":
        yield _Server("fake")
        return
    with running_littlehorse(work_dir / "lhserver") as real:
        yield _Server("real", real)


def _through_worker(
    server: _Server,
    target: Target,
    client: ComfyClient,
    work_dir: Path,
    tasks: int,
    prefetch: int,
    *,
    short: bool = False,
) -> dict[str, Any]:
    name = f"{server.kind}-{'short-' if short else ''}{prefetch}"
    out_dir, log_path = work_dir / f"lh-out-{name}", work_dir / f"lh-worker-{name}.log"
    graph = target.short_graph if short else target.fast_graph
    env = {"WORKER_PREFETCH": str(prefetch)}
    if short:
        env["WORKER_LOG_LEVEL"] = "info"  # each step's line: the cycle's phases
    with (
        server.fresh() as lh,
        job_stack(lh, target.base_url, out_dir, log_path, **env) as stack,
    ):
        stack.wait_done(_submit(stack, graph, WARMUP, "warm"), timeout_s=120)
        before = stack.round_trip_buckets()
        start = time.monotonic()
        jobs = _submit(stack, graph, tasks, "bench")
        stack.wait_done(jobs, timeout_s=120 + tasks)
        end = time.monotonic()
        after = stack.round_trip_buckets()
        prompt_ids = [stack.prompt_id(job) for job in jobs]
    times = target.times(client, prompt_ids)
    figures = _gaps(times)
    round_trips = {call: p50_ms(before[call], after[call]) for call in ROUND_TRIPS}
    run = {
        **figures,
        "elapsed_s": end - start,
        "tasks_per_s": tasks / (end - start),
        "round_trips": round_trips,
    }
    if short:
        run["cycle"] = cycle.phases(times, log_path)
    return run


def _submit(stack: JobStack, graph: Callable[[str], Graph], count: int, tag: str) -> list[str]:
    jobs = [f"{tag}-{i}-{uuid.uuid4().hex[:8]}" for i in range(count)]
    for job_id in jobs:
        stack.submit(graph("bench/lh"), job_id)
    return jobs


def _queued(
    target: Target, client: ComfyClient, tasks: int, graph: Callable[[str], Graph]
) -> dict[str, Any]:
    """Every prompt submitted at once, straight to ComfyUI: its own gap, the limit."""
    prompt_ids = [str(uuid.uuid4()) for _ in range(tasks)]
    for prompt_id in prompt_ids:
        client.submit_once(graph("bench/queued"), prompt_id=prompt_id, client_id="bench")
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
