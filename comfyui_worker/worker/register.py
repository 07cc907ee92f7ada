"""``main.py register [--lane NAME]``: the TaskDef and the ``comfyui-generate`` WfSpec.

The TaskDef's input and output types come from the task function's signature, so
registering needs the worker's task function (which is why it lives here, not in ``lh``).
"""

from __future__ import annotations

from typing import Any

import structlog
from littlehorse.worker import WorkerContext

from comfyui_worker.lh.api import LittleHorse, lh_config
from comfyui_worker.lh.lanes import task_name, wf_spec_name
from comfyui_worker.lh.wfspec import build_workflow
from comfyui_worker.settings import DeadlineSettings, WorkerSettings
from comfyui_worker.worker.task import task_function

log = structlog.get_logger("comfyui_worker.worker.register")


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
