"""The comfyui-generate WfSpec, run by the fake LittleHorse's engine with the real SDK worker."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from littlehorse import create_task_def, create_workflow_spec, to_variable_value
from littlehorse.config import LHConfig
from littlehorse.exceptions import LHTaskException
from littlehorse.model import (
    LHStatus,
    ListNodeRunsRequest,
    RunWfRequest,
    TaskStatus,
    VariableType,
)
from littlehorse.worker import LHTaskWorker, WorkerContext
from pydantic import ValidationError

from comfyui_worker.lh.wfspec import WF_SPEC_NAME, build_workflow, task_timeout_s
from comfyui_worker.settings import MAX_PREFETCH, DeadlineSettings
from fakes.littlehorse import FakeLittleHorse, WorkerThread, close_sync_channels

TASK = "execute-comfyui-workflow"
DEADLINES = DeadlineSettings.model_validate({"COMFYUI_HISTORY_TIMEOUT_SEC": "60"})


@pytest.fixture
def lh() -> Iterator[FakeLittleHorse]:
    # 1800 s task timeouts become 0.18 s, 5 s backoffs 0.5 ms
    with FakeLittleHorse(time_scale=1e-4) as fake:
        yield fake


@pytest.fixture
def client(lh: FakeLittleHorse) -> Iterator[LHConfig]:
    """The test's own LittleHorse client config (the worker has another)."""
    config = lh.config()
    yield config
    gc.collect()  # let finished calls go before their channel closes
    close_sync_channels(config)


TIMED_OUT = TaskStatus.TASK_TIMEOUT


def run(lh: FakeLittleHorse, config: LHConfig, behaviour: Any, wf_run_id: str) -> Any:
    """Register, start a worker with ``behaviour`` as the task, run one WfRun to its end."""

    async def execute_comfyui_workflow(
        workflow: dict[str, Any], ctx: WorkerContext
    ) -> dict[str, Any]:
        result: dict[str, Any] = await behaviour(workflow, ctx)
        return result

    create_task_def(execute_comfyui_workflow, TASK, config)
    create_workflow_spec(build_workflow(DEADLINES, TASK), config)
    with WorkerThread(LHTaskWorker(execute_comfyui_workflow, TASK, lh.config())):
        request = RunWfRequest(
            wf_spec_name=WF_SPEC_NAME,
            id=wf_run_id,
            variables={"workflow": to_variable_value({"template": "smoke"})},
        )
        config.stub().RunWf(request)
        wf_run = lh.wait_wf_run(wf_run_id, timeout_s=30)
        lh.wait_for(lambda: every_claim_reported(lh, wf_run_id), 30, "every report")
        return wf_run


def every_claim_reported(lh: FakeLittleHorse, wf_run_id: str) -> bool:
    """Whether each attempt a worker claimed was reported (so no call is cut at shutdown)."""
    claimed = [
        a for a in lh.task_run("0-1", wf_run_id=wf_run_id).attempts if a.HasField("start_time")
    ]
    reports = [r for r in lh.reports if r.task_run_id.wf_run_id.id == wf_run_id]
    return len(reports) >= len(claimed)


def failure_name(config: LHConfig, wf_run: Any) -> str:
    """The name the failure handler failed the WfRun with (on its own thread's NodeRuns)."""
    assert wf_run.status in (LHStatus.EXCEPTION, LHStatus.ERROR), wf_run.status
    request = ListNodeRunsRequest(wf_run_id=wf_run.id, thread_run_number=1)
    node_runs = config.stub().ListNodeRuns(request).results
    names = [failure.failure_name for node in node_runs for failure in node.failures]
    assert names, node_runs
    return str(names[-1])


def test_a_success_completes_with_the_result(lh: FakeLittleHorse, client: LHConfig):
    """The task's output becomes the WfRun's `result`."""

    async def succeed(workflow: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
        return {"status": "success"}

    assert run(lh, client, succeed, "wf-ok").status == LHStatus.COMPLETED


def test_a_business_error_fails_the_wfrun_with_its_own_name(lh: FakeLittleHorse, client: LHConfig):
    """invalid-workflow is caught by its own handler and not retried."""

    async def reject(workflow: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
        raise LHTaskException("invalid-workflow", "bad", to_variable_value({"error": "x"}))

    wf_run = run(lh, client, reject, "wf-bad")
    assert failure_name(client, wf_run) == "invalid-workflow"
    assert len(lh.task_run("0-1", wf_run_id="wf-bad").attempts) == 1


def test_technical_failures_are_retried_then_named_task_failed(
    lh: FakeLittleHorse, client: LHConfig
):
    """TASK_FAILED is retried 3 times, then the WfRun fails as task-failed, not comfyui-unavailable."""

    async def crash(workflow: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
        raise RuntimeError("comfyui-unavailable: down")

    wf_run = run(lh, client, crash, "wf-crash")
    assert failure_name(client, wf_run) == "task-failed"
    assert len(lh.task_run("0-1", wf_run_id="wf-crash").attempts) == 4


@pytest.mark.slow  # a second or more of real waiting
def test_timeouts_are_named_task_timeout(lh: FakeLittleHorse, client: LHConfig):
    """The timeout handler comes before TASK_ERROR, which would also catch it."""

    async def hang(workflow: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
        mine = ctx.attempt_number
        while lh.task_run("0-1", wf_run_id="wf-slow").attempts[mine].status != TIMED_OUT:
            await asyncio.sleep(0.01)  # returns only once the attempt's timeout has passed
        return {}

    assert failure_name(client, run(lh, client, hang, "wf-slow")) == "task-timeout"


def test_the_timeout_covers_a_parked_task():
    """A claimed task may wait for every one ahead of it: (task slots + 1) budgets."""
    assert task_timeout_s(DEADLINES) == 3 * (60 + 300)  # 1 in ComfyUI, 1 saving, 1 parked
    for prefetch in (1, 2, MAX_PREFETCH):
        prefetching = DEADLINES.model_copy(update={"prefetch": prefetch})
        assert task_timeout_s(prefetching) == (prefetch + 3) * (60 + 300)


def test_prefetch_deeper_than_the_bound_is_refused():
    """WORKER_PREFETCH is 0..MAX_PREFETCH: a deeper queue would only hoard the fleet's work."""
    env = {"COMFYUI_HISTORY_TIMEOUT_SEC": "60"}
    deepest = DeadlineSettings.model_validate({**env, "WORKER_PREFETCH": str(MAX_PREFETCH)})
    assert deepest.slots == 1 + MAX_PREFETCH
    with pytest.raises(ValidationError, match="WORKER_PREFETCH"):
        DeadlineSettings.model_validate({**env, "WORKER_PREFETCH": str(MAX_PREFETCH + 1)})


def test_retry_of_is_an_optional_searchable_string():
    """retry_of records what a job retries; searchable, so LittleHorse lists a job's retries."""
    spec = build_workflow(DEADLINES, TASK).compile()
    variables = {
        v.var_def.name: v for v in spec.thread_specs[spec.entrypoint_thread_name].variable_defs
    }
    assert list(variables) == ["workflow", "result", "retry_of"]
    retry_of = variables["retry_of"]
    assert retry_of.searchable and not retry_of.required
    assert retry_of.var_def.type_def.primitive_type == VariableType.STR
