"""Pins the LittleHorse SDK internals ``worker/sdk.py`` relies on, and the guards it adds.

If an SDK upgrade renames or moves any of these, these tests fail first and loudly.
"""

from __future__ import annotations

import inspect
import json

import pytest
from littlehorse.config import LHConfig
from littlehorse.exceptions import SerdeException
from littlehorse.model import (
    ScheduledTask,
    TaskDefId,
    TaskRunId,
    VariableValue,
    VarNameAndVal,
    WfRunId,
)
from littlehorse.utils import extract_value
from littlehorse.worker import LHConnection, LHTask, LHTaskWorker

from comfyui_worker.worker.ledger import Ledger, key_of
from comfyui_worker.worker.sdk import ObservedConfig, set_slots
from comfyui_worker.worker.stub import guard_inputs, timestamp_ns


def scheduled(json_obj: str, attempt: int = 0) -> ScheduledTask:
    return ScheduledTask(
        task_run_id=TaskRunId(wf_run_id=WfRunId(id="wf"), task_guid="g"),
        task_def_id=TaskDefId(name="t"),
        attempt_number=attempt,
        variables=[VarNameAndVal(var_name="workflow", value=VariableValue(json_obj=json_obj))],
    )


def test_the_sdk_still_decodes_inputs_outside_its_try():
    """The gap we close: the SDK's decoder raises on bad JSON, and does so before its try."""
    with pytest.raises(SerdeException):
        extract_value(VariableValue(json_obj="{not json"))
    source = inspect.getsource(LHConnection._execute_task)
    assert source.index("extract_value(") < source.index("try:")


def test_the_private_names_we_use_still_exist():
    """LHTask, the worker's heartbeat/connections/task, the slot semaphore, the config dict."""
    assert inspect.iscoroutinefunction(LHTaskWorker._heartbeat)
    assert {"_callable", "_connections"} <= set(vars(LHTaskWorker(_noop, "t", LHConfig())))
    assert list(inspect.signature(LHTask).parameters) == ["callable", "task_def"]
    assert "_schedule_task_semaphore" in inspect.getsource(LHConnection.__init__)
    assert "self._config.stub(" in inspect.getsource(LHConnection.__init__)
    assert "self._config.stub(" in inspect.getsource(LHTaskWorker._heartbeat)
    assert list(inspect.signature(LHConfig.stub).parameters) == [
        "self",
        "server",
        "name",
        "async_channel",
    ]
    assert isinstance(LHConfig()._configs, dict)


def test_slots_override_the_environment(monkeypatch: pytest.MonkeyPatch):
    """set_slots wins over LHW_NUM_WORKER_THREADS from the environment."""
    monkeypatch.setenv("LHW_NUM_WORKER_THREADS", "1")
    config = ObservedConfig(Ledger())
    set_slots(config, 2)
    assert config.num_worker_threads == 2


async def _noop(workflow: dict[str, object]) -> dict[str, object]:
    return workflow


@pytest.mark.parametrize("text", ["{not json", "[" * 5000 + "]" * 5000, '{"a": 1', ""])
def test_undecodable_input_is_replaced_and_remembered(text: str):
    """Bad JSON (or nesting past the recursion limit) is swapped for {} and its reason kept."""
    ledger = Ledger()
    task = scheduled(text)
    guard_inputs(task, ledger)
    assert task.variables[0].value.json_obj == "{}"
    assert "input 'workflow' is not valid JSON" in ledger.input_errors[key_of(task)]
    assert extract_value(task.variables[0].value) == {}


def test_good_input_is_left_alone():
    """A decodable input passes untouched and records nothing."""
    ledger = Ledger()
    task = scheduled(json.dumps({"1": {"class_type": "X", "inputs": {}}}))
    guard_inputs(task, ledger)
    assert json.loads(task.variables[0].value.json_obj) == {"1": {"class_type": "X", "inputs": {}}}
    assert ledger.input_errors == {}


def test_the_ledger_follows_a_task_from_claim_to_report():
    """Claimed, started, finished, reported: held and executing counts follow."""
    ledger = Ledger()
    key = key_of(scheduled("{}"))
    ledger.claimed(key)
    assert ledger.held() == 1 and ledger.executing() == 0
    ledger.started(key)
    assert ledger.executing() == 1
    ledger.finished(key)
    assert ledger.executing() == 0 and ledger.held() == 1
    ledger.reported(key)
    assert ledger.held() == 0


def test_a_claim_that_never_starts_is_stuck():
    """A claimed task not started within the bound is named; a started one is not."""
    ledger = Ledger()
    ledger.claimed(("wf", "late", 0))
    assert ledger.stuck_claim(bound_s=3600) is None
    assert "task late attempt 0" in (ledger.stuck_claim(bound_s=-1) or "")
    ledger.started(("wf", "late", 0))
    assert ledger.stuck_claim(bound_s=-1) is None


def test_the_ledger_keeps_when_an_attempt_was_scheduled_to_the_nanosecond():
    """The ScheduledTask's created_at (public proto field) is kept whole, unlike ctx.scheduled_time."""
    task = scheduled("{}")
    task.created_at.FromNanoseconds(1_795_000_000_123_456_789)
    ledger = Ledger()
    ledger.claimed(key_of(task), 0, timestamp_ns(task.created_at))
    assert ledger.scheduled_at_ns(key_of(task)) == 1_795_000_000_123_456_789
    assert ledger.scheduled_at_ns(("wf", "unseen", 0)) == 0
    ledger.reported(key_of(task))
    assert ledger.scheduled_at_ns(key_of(task)) == 0


def test_a_stop_task_after_the_report_leaves_nothing_behind():
    """STOP_TASK fences a task still held; a late one (a started record) is dropped."""
    ledger = Ledger()
    held, gone = ("wf-1", "0-1", 0), ("wf-2", "0-1", 0)
    ledger.started(held)
    ledger.fence(held)
    ledger.fence(gone)
    assert ledger.fenced == {held}
    ledger.reported(held)
    assert ledger.fenced == set()
