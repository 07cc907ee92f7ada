"""Priority lanes: LittleHorse has no per-task priority, so urgent work gets its own queue.

A lane is a second TaskDef (``execute-comfyui-workflow-<lane>``) with a WfSpec of its
own (``comfyui-generate-<lane>``), served by worker + ComfyUI pairs reserved for it
(``LHW_TASK_NAME=execute-comfyui-workflow-<lane>``). Default workers never poll the
lane's TaskDef, so an urgent job waits only for the lane's own workers, never behind
the default queue. ``main.py register --lane NAME`` creates both.
"""

from __future__ import annotations

from typing import Any

import structlog
from littlehorse.worker import WorkerContext

from comfyui_worker.errors import ConfigError
from comfyui_worker.lh_worker import task_function
from comfyui_worker.lhapi import LittleHorse, lh_config
from comfyui_worker.settings import (
    DEFAULT_LANE,
    DeadlineSettings,
    WorkerSettings,
    is_lane_name,
)
from comfyui_worker.wfspec import WF_SPEC_NAME, build_workflow

log = structlog.get_logger("comfyui_worker.lanes")


def checked(lane: str) -> str:
    """A lane name, validated: it becomes part of TaskDef and WfSpec names."""
    if not is_lane_name(lane):  # callers have let DEFAULT_LANE through already
        raise ConfigError(f"lane {lane!r}: must be kebab-case (e.g. urgent) and not 'default'")
    return lane


def task_name(base: str, lane: str | None) -> str:
    """The lane's TaskDef: ``<base>-<lane>`` (``base`` itself if it already ends so)."""
    if lane is None or lane == DEFAULT_LANE or base.endswith(f"-{lane}"):
        return base
    return f"{base}-{checked(lane)}"


def wf_spec_name(lane: str | None) -> str:
    """The lane's WfSpec: ``comfyui-generate-<lane>``."""
    if lane is None or lane == DEFAULT_LANE:
        return WF_SPEC_NAME
    return f"{WF_SPEC_NAME}-{checked(lane)}"


def lane_of(wf_spec: str) -> str:
    """The lane a WfSpec serves (its own name for a WfSpec that is no lane of ours)."""
    if wf_spec == WF_SPEC_NAME:
        return DEFAULT_LANE
    return wf_spec.removeprefix(f"{WF_SPEC_NAME}-")


async def _not_served(workflow: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """Stands in for the handler where only the TaskDef's signature is needed."""
    raise RuntimeError("this process only registers the TaskDef; it does not execute tasks")


def register(lane: str | None, deadlines: DeadlineSettings, settings: WorkerSettings) -> int:
    """``main.py register [--lane NAME]``: the (lane's) TaskDef and ``comfyui-generate`` WfSpec."""
    lh = LittleHorse(lh_config(), settings.lh_address)
    task = task_name(settings.task_name, lane)
    spec = wf_spec_name(lane)
    lh.ensure_task_def(task, task_function(_not_served))
    lh.put_wf_spec(build_workflow(deadlines, task, name=spec))
    log.info("lh.wf_spec_registered", wf_spec=spec, task_name=task, lane=lane)
    return 0
