"""Item 5's stack: ``main.py register`` and ``main.py worker`` on either LittleHorse, fed WfRuns.

The same jobs reach the worker the way a user's do (RunWf of ``comfyui-generate``) on the
fake or on the real server (a tenant of its own per run), so the two rows compare the
servers and nothing else. The worker's own ``/metrics`` give its LittleHorse round trips
(``comfyui_worker_littlehorse_call_seconds``): claim, checkpoint, report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from littlehorse import to_variable_value
from littlehorse.model import LHStatus, RunWfRequest, VariableId, WfRunId
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import ROOT, WORKFLOWS
from fakes.littlehorses import LittleHorseUnderTest, wait_for
from fakes.processes import start_worker, terminate
from fakes.seaweed import free_ports

ROUND_TRIPS = ("claim", "checkpoint", "report")
Buckets = dict[str, list[tuple[float, float]]]  # call -> [(upper bound s, cumulative count)]


class JobStack:
    """A registered LittleHorse with one worker polling it, and jobs to run through it."""

    def __init__(self, lh: LittleHorseUnderTest, port: int) -> None:
        self.lh = lh
        self.port = port

    def submit(self, workflow: dict[str, Any], job_id: str) -> None:
        """RunWf of comfyui-generate, as ``main.py submit`` sends it."""
        variables = {"workflow": to_variable_value(workflow)}
        self.lh.stub.RunWf(
            RunWfRequest(wf_spec_name="comfyui-generate", id=job_id, variables=variables)
        )

    def wait_done(self, job_ids: list[str], timeout_s: float) -> None:
        """Until every job completed; raise naming one that did not."""
        for job_id in job_ids:
            run = self.lh.wait_wf_run(job_id, timeout_s=timeout_s)
            if run.status != LHStatus.COMPLETED:
                raise RuntimeError(f"job {job_id} ended with WfRun status {run.status}")

    def prompt_id(self, job_id: str) -> str:
        """The prompt the job's result names."""
        variable_id = VariableId(wf_run_id=WfRunId(id=job_id), thread_run_number=0, name="result")
        variable = self.lh.stub.GetVariable(variable_id)
        return str(json.loads(variable.value.json_obj)["prompt_id"])

    def round_trip_buckets(self) -> Buckets:
        """The worker's LittleHorse round-trip histograms, as scraped now."""
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        found: Buckets = {call: [] for call in ROUND_TRIPS}
        for family in text_string_to_metric_families(text):
            if family.name != "comfyui_worker_littlehorse_call_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.labels.get("call") in found:
                    bound = float(sample.labels["le"])
                    found[sample.labels["call"]].append((bound, sample.value))
        return found


def p50_ms(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> dict[str, float]:
    """n and the median of the calls made between two scrapes, read off the buckets."""
    counts = sorted((bound, count - dict(before).get(bound, 0.0)) for bound, count in after)
    total = counts[-1][1] if counts else 0.0
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in counts:
        if count >= total / 2 and total:
            if bound == float("inf"):
                return {"n": total, "p50_ms": lower_bound * 1000}
            share = (total / 2 - lower_count) / max(count - lower_count, 1e-9)
            return {"n": total, "p50_ms": (lower_bound + share * (bound - lower_bound)) * 1000}
        lower_bound, lower_count = bound, count
    return {"n": total, "p50_ms": float("nan")}


@contextmanager
def job_stack(
    lh: LittleHorseUnderTest, base_url: str, out_dir: Path, log_path: Path, **env: str
) -> Iterator[JobStack]:
    """``main.py register``, then ``main.py worker`` until it polls; stopped on exit."""
    common = {
        "PATH": os.environ.get("PATH", ""),
        **lh.env(),
        "COMFYUI_WORKFLOWS_DIR": str(WORKFLOWS),
        "WORKER_LOG_LEVEL": "warning",
        "WORKER_LOG_FORMAT": "json",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "main.py", "register"],
        cwd=ROOT,
        env=common,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"main.py register failed: {done.stderr[-2000:]}")
    [port] = free_ports(1)
    worker_env = {
        **common,
        "COMFYUI_BASE_URL": base_url,
        "COMFYUI_OUTPUT_DIR": str(out_dir),
        "WORKER_HTTP_PORT": str(port),
        "WORKER_HTTP_HOST": "127.0.0.1",
    }
    with log_path.open("ab") as log:
        proc = start_worker(worker_env, log)
        try:
            stack = JobStack(lh, port)
            wait_for(lambda: _polling(port), 90, f"the worker to poll (log: {log_path})")
            yield stack
        except Exception as exc:
            raise RuntimeError(f"{exc} (worker log: {log_path})") from exc
        finally:
            terminate(proc)


def _polling(port: int) -> bool | None:
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
    except httpx.HTTPError:
        return None
    return True if body.get("littlehorse") == "ok" else None
