"""The example WfSpec ``comfyui-generate``: one JSON_OBJ in, the execution result out.

A WfRun of it is a job (``jobs/client.py``): ``workflow`` is the input, ``result`` the
output, and the optional, searchable ``retry_of`` names the job a retry repeats, so
LittleHorse itself answers "what were the retries of X" (no database of our own).

Its task timeout covers the wait a claimed task may spend parked behind the one
running on the same worker, plus its own execution and download (LittleHorse's
default of 60 s would kill most generations; see README, "Timeouts"). Technical
failures are retried with exponential backoff; each business exception fails the
WfRun with its own name and a message that says what to do; technical failures
that outlast the retries fail it as ``task-failed``, timeouts as ``task-timeout``.
"""

from __future__ import annotations

from collections.abc import Callable

from littlehorse.model import ExponentialBackoffRetryPolicy, LHErrorType
from littlehorse.workflow import Workflow, WorkflowThread

from comfyui_worker.errors import business_errors
from comfyui_worker.settings import DeadlineSettings

WF_SPEC_NAME = "comfyui-generate"
WORKFLOW_VAR = "workflow"
RESULT_VAR = "result"
RETRY_OF_VAR = "retry_of"
DOWNLOAD_MARGIN_S = 300
RETRIES = 3
BACKOFF = ExponentialBackoffRetryPolicy(base_interval_ms=5_000, multiplier=2.0, max_delay_ms=60_000)
PARKED_TASKS = 1  # the SDK claims one task more than it has slots

ADVICE = {
    "invalid-workflow": "fix the workflow, template name or parameters "
    "(see the TaskRun's exception content)",
    "output-rejected": "an output had an unsafe path or exceeded COMFYUI_MAX_OUTPUT_BYTES",
    "execution-failed": "a node raised inside ComfyUI; "
    "the content names the node, its type and the message",
    "execution-interrupted": "the prompt was interrupted (in ComfyUI, or the job was "
    "cancelled); run the WfRun again if that was a mistake",
}
# LittleHorse uses the first handler that matches, and TASK_ERROR also matches TIMEOUT:
# the timeout handler must come first.
TECHNICAL_HANDLERS = {
    LHErrorType.TIMEOUT: (
        "task-timeout",
        "no worker finished the task within its timeout; check that workers are running",
    ),
    LHErrorType.TASK_ERROR: (
        "task-failed",
        f"still failing after {RETRIES} retries; each attempt's error is in its TaskRun",
    ),
}


def execution_budget_s(deadlines: DeadlineSettings) -> int:
    """One task on a worker: its execution deadline plus time to save its outputs."""
    return int(deadlines.history_timeout_s) + DOWNLOAD_MARGIN_S


def task_timeout_s(deadlines: DeadlineSettings) -> int:
    """Per-attempt timeout: a claimed task may wait for every task ahead of it first.

    With ``task_slots`` tasks running at once the SDK claims ``task_slots + 1``; the
    last one waits for the others before it runs, so it needs ``task_slots + 1``
    execution budgets. ``WORKER_TASK_TIMEOUT_SEC`` sets it outright.
    """
    if deadlines.task_timeout_s is not None:
        return deadlines.task_timeout_s
    return (deadlines.task_slots + PARKED_TASKS) * execution_budget_s(deadlines)


def build_workflow(
    deadlines: DeadlineSettings, task_name: str, *, name: str = WF_SPEC_NAME
) -> Workflow:
    """The WfSpec, built with the SDK so ``main.py register`` can deploy it."""
    missing = set(ADVICE) ^ {cls.name for cls in business_errors()}
    if missing:
        raise AssertionError(f"ADVICE and errors.py disagree on {sorted(missing)}")

    def entrypoint(wf: WorkflowThread) -> None:
        workflow = wf.declare_json_obj(WORKFLOW_VAR).required()
        result = wf.declare_json_obj(RESULT_VAR)
        wf.declare_str(RETRY_OF_VAR).searchable()
        node = wf.execute(
            task_name,
            workflow,
            timeout_seconds=task_timeout_s(deadlines),
            retries=RETRIES,
            exponential_backoff=BACKOFF,
        )
        result.assign(node)
        for error_name, advice in ADVICE.items():
            wf.handle_exception(node, _fail_with(error_name, advice), error_name)
        for error_type, (failure, advice) in TECHNICAL_HANDLERS.items():
            wf.handle_error(node, _fail_with(failure, advice), error_type)
        wf.complete(result)

    return Workflow(name, entrypoint)


def _fail_with(name: str, advice: str) -> Callable[[WorkflowThread], None]:
    """A handler thread that fails the WfRun with a named, actionable failure."""

    def handler(thread: WorkflowThread) -> None:
        thread.fail(name, advice)

    return handler
