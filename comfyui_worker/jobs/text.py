"""Jobs as text for a terminal: one line each for ``jobs``, a page for ``jobs show``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from comfyui_worker.jobs.model import Attempt, Job, JobStatus

LABELS = {JobStatus.WAITING: "waiting for GPU"}  # claimed, its prompt not in ComfyUI yet
COLUMNS = ("ID", "STATUS", "LANE", "TEMPLATE", "PARAMS", "DURATION", "ERROR")
PARAMS_CHARS = 40
ERROR_CHARS = 100


def table(jobs: list[Job]) -> str:
    """One line per job: id, status, lane, template, main params, duration, error."""
    rows = [COLUMNS] + [
        (
            job.id,
            LABELS.get(job.status, job.status.value),
            job.lane,
            job.template or "(graph)",
            _cut(params_text(job.params), PARAMS_CHARS),
            f"{job.total_s:.1f}s",
            _cut(job.error.one_line(), ERROR_CHARS) if job.error else "",
        )
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join([*map(str.ljust, row, widths), row[-1]]).rstrip() for row in rows]
    return "\n".join(lines)


def details(job: Job, retries: list[str]) -> str:
    """Everything about one job: status, timings, input, outputs, error, each attempt's trail."""
    lines = [f"job {job.id}  ({job.wf_spec}, lane {job.lane})"]
    lines += _field("status", f"{LABELS.get(job.status, job.status.value)} (WfRun {job.lh_status})")
    if job.retry_of:
        lines += _field("retry of", job.retry_of)
    if retries:
        lines += _field("retried as", ", ".join(retries))
    lines += _timings(job)
    lines += _field("template", job.template or "(a graph)")
    lines += _field("params", params_text(job.params) or "-")
    if job.overrides:
        lines += _field("overrides", params_text(job.overrides))
    lines += _field("input", json.dumps(job.input, ensure_ascii=False)[:2000])
    if job.error:
        lines += _error(job)
    for output in job.outputs:
        lines += _field(
            "output",
            f"{output.relative_path}  {output.media_type}  "
            f"{output.size_bytes} B  sha256 {output.sha256[:12]}  {output.path}",
        )
    for attempt in job.attempts:
        lines += _attempt(attempt, job.max_attempts)
    if job.result is not None:
        stored = job.result.stored
        lines += ["result", _indent(json.dumps(stored, indent=2, ensure_ascii=False))]
    return "\n".join(lines)


def params_text(params: dict[str, Any]) -> str:
    """``name=value`` pairs, values as JSON unless they are plain text."""
    return " ".join(
        f"{name}={value if isinstance(value, str) else json.dumps(value)}"
        for name, value in params.items()
    )


def _timings(job: Job) -> list[str]:
    lines = _field("created", _when(job.created_at))
    if job.started_at:
        lines += _field("started", f"{_when(job.started_at)}  (queued {job.queued_s:.1f}s)")
    if job.ended_at:
        ran = f"ran {job.run_s:.1f}s, " if job.run_s is not None else ""
        lines += _field("ended", f"{_when(job.ended_at)}  ({ran}total {job.total_s:.1f}s)")
    return lines


def _error(job: Job) -> list[str]:
    error = job.error
    assert error is not None
    lines = _field("error", f"{error.name}: {error.message}")
    if error.node_id:
        node = f"node {error.node_id} ({error.node_type or '?'})"
        raised = f"{error.exception_type or ''}: {error.exception_message or ''}".strip(": ")
        lines += _field("", f"{node} raised {raised}" if raised else node)
    if error.last_attempt:
        lines += _field("", f"last attempt: {error.last_attempt}")
    return lines


def _attempt(attempt: Attempt, total: int) -> list[str]:
    head = f"attempt {attempt.number + 1}/{total}  {attempt.status}"
    if attempt.worker:
        head += f"  on {attempt.worker}"
    if attempt.started_at:
        head += f"  started {_when(attempt.started_at)}"
    lines = [head]
    if attempt.error:
        lines.append(f"    error: {attempt.error}")
    lines += [f"    | {line}" for line in attempt.log.splitlines()]
    return lines


def _field(name: str, value: str) -> list[str]:
    return [f"{name:<11}{value}"]


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
