"""The example WfSpec ``comfyui-generate``: one JSON_OBJ in, the execution result out.

The task timeout covers the execution deadline plus download time (LittleHorse's
default of 60 s would kill most generations); technical failures are retried with
exponential backoff, and each business exception fails the WfRun with a message
that says what to do.
"""

from __future__ import annotations

from collections.abc import Callable

from littlehorse.model import ExponentialBackoffRetryPolicy, LHErrorType
from littlehorse.workflow import Workflow, WorkflowThread

from comfyui_worker.settings import ComfySettings

WF_SPEC_NAME = "comfyui-generate"
DOWNLOAD_MARGIN_S = 300
RETRIES = 3
BACKOFF = ExponentialBackoffRetryPolicy(base_interval_ms=5_000, multiplier=2.0, max_delay_ms=60_000)

ADVICE = {
    "invalid-workflow": "fix the workflow, template name or parameters "
    "(see the TaskRun's exception content)",
    "execution-failed": "a node raised inside ComfyUI; "
    "the content names the node, its type and the message",
    "execution-interrupted": "someone interrupted the prompt in ComfyUI; "
    "run the WfRun again if that was a mistake",
    "output-rejected": "an output had an unsafe path or exceeded COMFYUI_MAX_OUTPUT_BYTES",
}


def task_timeout_s(comfy: ComfySettings) -> int:
    """Per-attempt task timeout: the execution deadline plus time to download outputs."""
    return int(comfy.history_timeout_s) + DOWNLOAD_MARGIN_S


def build_workflow(comfy: ComfySettings, task_name: str) -> Workflow:
    """The WfSpec, built with the SDK so ``main.py register`` can deploy it."""

    def entrypoint(wf: WorkflowThread) -> None:
        workflow = wf.declare_json_obj("workflow").required()
        result = wf.declare_json_obj("result")
        node = wf.execute(
            task_name,
            workflow,
            timeout_seconds=task_timeout_s(comfy),
            retries=RETRIES,
            exponential_backoff=BACKOFF,
        )
        result.assign(node)
        for name, advice in ADVICE.items():
            wf.handle_exception(node, _fail_with(name, advice), name)
        wf.handle_error(
            node,
            _fail_with(
                "comfyui-unavailable", f"still failing after {RETRIES} retries; check ComfyUI"
            ),
            LHErrorType.TASK_ERROR,
        )
        wf.complete(result)

    return Workflow(WF_SPEC_NAME, entrypoint)


def _fail_with(name: str, advice: str) -> Callable[[WorkflowThread], None]:
    """A handler thread that fails the WfRun with a named, actionable failure."""

    def handler(thread: WorkflowThread) -> None:
        thread.fail(name, advice)

    return handler
