"""Priority lanes: LittleHorse has no per-task priority, so urgent work gets its own queue.

A lane is a second TaskDef (``execute-comfyui-workflow-<lane>``) with a WfSpec of its
own (``comfyui-generate-<lane>``), served by worker + ComfyUI pairs reserved for it
(``LHW_TASK_NAME=execute-comfyui-workflow-<lane>``). Default workers never poll the
lane's TaskDef, so an urgent job waits only for the lane's own workers, never behind
the default queue. ``main.py register --lane NAME`` creates both (``worker/register.py``).
"""

from __future__ import annotations

from comfyui_worker.errors import ConfigError
from comfyui_worker.lh.wfspec import WF_SPEC_NAME
from comfyui_worker.settings import DEFAULT_LANE, is_lane_name


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
