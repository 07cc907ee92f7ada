"""The worker's cycle between ComfyUI finishing one prompt and the next prompt being queued.

Read from the worker's own JSON log (``WORKER_LOG_LEVEL=info``: one line per step, each
with its wall-clock ``timestamp`` and ``prompt_id``) beside ComfyUI's finish times. For
each finished prompt A, B is the first prompt whose checkpoint began after the worker
knew A had finished (a task frees its place in ComfyUI then, and the next one, already
claimed and prepared, goes on). The cycle is A finished -> B queued, in phases:

- ``detect``: ComfyUI finished A -> the worker knows (WebSocket, one ``/history``);
- ``turn``: -> B's checkpoint starts (B passes the gate; B's thread gets the CPU);
- ``checkpoint``: B's submission recorded with LittleHorse (the cancel check beside it);
- ``post``: B's ``POST /prompt``.

``save`` (A's outputs, manifest) runs beside B's turn, checkpoint and POST, so it is off
the path; it is shown for comparison. With prefetch N, B waits behind N prompts, so
the GPU idles only when the cycle is longer than those N executions. Wall and monotonic
clocks are related by one offset taken in this process (one host: the same for every
process).
"""

from __future__ import annotations

import bisect
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import summary_ms
from benchmarks.fakeproc import PromptTimes

PHASES = ("detect", "turn", "checkpoint", "post")
BESIDE = ("save",)
STEPS = {
    "comfy.prompt_finished": "finished",
    "task.succeeded": "succeeded",
    "lh.submission_recorded": "recorded",
    "comfy.prompt_queued": "queued",
}


def steps(log_path: Path) -> dict[str, dict[str, float]]:
    """``{prompt_id: {step: monotonic s}}`` from the worker's JSON log."""
    offset = time.time() - time.monotonic()
    found: dict[str, dict[str, float]] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        step = STEPS.get(str(entry.get("event")))
        prompt_id, stamp = entry.get("prompt_id"), entry.get("timestamp")
        if step is None or not isinstance(prompt_id, str) or not isinstance(stamp, str):
            continue
        wall = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        marks = found.setdefault(prompt_id, {})
        marks.setdefault(step, wall - offset)
        took_ms = entry.get("took_ms")
        if step == "recorded" and isinstance(took_ms, int | float):
            marks.setdefault("recording", wall - offset - took_ms / 1000)
    return found


def phases(times: dict[str, PromptTimes], log_path: Path) -> dict[str, Any]:
    """p50/p95 of each phase and of the whole cycle, over every finished prompt."""
    marks = steps(log_path)
    complete = {p: m for p, m in marks.items() if p in times and len(m) == len(STEPS) + 1}
    recording = sorted((m["recording"], p) for p, m in complete.items())
    recording_at = [at for at, _ in recording]
    parts: dict[str, list[float]] = {name: [] for name in (*PHASES, *BESIDE, "cycle")}
    for prompt_id, mark in complete.items():
        following = bisect.bisect_right(recording_at, mark["finished"])
        if following == len(recording):
            continue  # the last task: nothing came after it
        after = complete[recording[following][1]]
        finished = times[prompt_id].finished
        parts["detect"].append(mark["finished"] - finished)
        parts["turn"].append(after["recording"] - mark["finished"])
        parts["checkpoint"].append(after["recorded"] - after["recording"])
        parts["post"].append(after["queued"] - after["recorded"])
        parts["save"].append(mark["succeeded"] - mark["finished"])
        parts["cycle"].append(after["queued"] - finished)
    return {name: summary_ms(values) for name, values in parts.items()}
