"""Hostile input end to end: parse → prepare → validate → preflight → collect → result.

Property: whatever a task sends (or a ComfyUI returns), only the project's own
errors escape, and every error and result stays within its size budget.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyui_worker.bounds import json_size
from comfyui_worker.errors import MAX_DETAILS_BYTES, MAX_MESSAGE_CHARS, ComfyWorkerError
from comfyui_worker.outputs.collect import collect, plan
from comfyui_worker.result import RunResult
from comfyui_worker.workflow.preflight import preflight
from comfyui_worker.workflow.request import Identity
from tests import FIXTURES, ROOT
from tests.conftest import make_settings
from tests.test_result import result

FIXTURES = FIXTURES / "comfyui"
OBJECT_INFO = json.loads((FIXTURES / "get_object_info_subset.json").read_text())
WORKFLOWS = ROOT / "workflows"
CLASSES = sorted(OBJECT_INFO)

texts = st.text(alphabet=st.characters(blacklist_categories=()), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=16,
)
node_ids = st.one_of(
    st.sampled_from(["1", "2", "3", "²", "\u0661", "9" * 5000, "0" * 50, "node.x"]), texts
)
links = st.tuples(node_ids, st.integers(-2, 3)).map(list)
nodes = st.fixed_dictionaries(
    {
        "class_type": st.one_of(st.sampled_from(CLASSES), texts),
        "inputs": st.dictionaries(texts, st.one_of(values, links), max_size=4),
    }
)
graphs = st.dictionaries(node_ids, st.one_of(nodes, values), max_size=5)
images = st.lists(
    st.fixed_dictionaries(
        {"name": texts}, optional={"base64": texts, "path": texts, "url": texts, "x": values}
    ),
    max_size=2,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "template": st.one_of(st.sampled_from(["smoke", "upscale", "nope"]), texts),
        "workflow": st.one_of(graphs, values),
        "params": st.dictionaries(texts, values, max_size=4),
        "overrides": st.dictionaries(st.one_of(texts, st.just("3.seed")), values, max_size=4),
        "images": images,
    },
)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


task_inputs = st.one_of(
    graphs,
    envelopes,
    values,
    st.integers(0, 1200).map(lambda d: {"1": {"class_type": "X", "inputs": {"v": nested(d)}}}),
)


@pytest.fixture(scope="module")
def preparer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from comfyui_worker.workflow.request import TaskPreparer

    root = tmp_path_factory.mktemp("fuzz")
    (root / "in").mkdir()
    config = make_settings(
        "http://comfy.test",
        root / "out",
        COMFYUI_WORKFLOWS_DIR=str(WORKFLOWS),
        COMFYUI_INPUT_DIR=str(root / "in"),
    )
    return TaskPreparer(config)


def bounded(error: ComfyWorkerError) -> bool:
    return (
        len(error.message) <= MAX_MESSAGE_CHARS + 40
        and json_size(error.details) <= MAX_DETAILS_BYTES
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task=task_inputs)
def test_any_task_input_fails_only_with_our_bounded_errors(preparer: Any, task: Any):
    """parse, render, validate, bind and preflight raise nothing but our own, bounded errors."""
    try:
        request = preparer.request(task, Identity("p", "r"))
        preflight(request.graph, OBJECT_INFO)
    except ComfyWorkerError as error:
        assert bounded(error), (error.name, len(error.message))
        json.dumps(error.content(), allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(outputs=st.one_of(values, st.dictionaries(texts, values, max_size=4)))
def test_any_history_outputs_collect_without_surprises(outputs: Any):
    """Whatever a (custom) node reports, collecting and planning raise only our errors."""
    try:
        plan(collect(outputs, include_temp=True).files)
    except ComfyWorkerError as error:
        assert error.business and bounded(error)


@settings(max_examples=100, deadline=None)
@given(text=st.dictionaries(texts, st.lists(texts, max_size=50), max_size=5), extra=values)
def test_any_result_stays_strict_json_within_budget(text: Any, extra: Any):
    """Any text and values ComfyUI returns give a strict-JSON result under the budget."""
    bounded_result = result(text=text, values={"1": {"v": extra}}, params={"p": extra}).to_json(
        8192
    )
    assert json_size(bounded_result) <= 8192
    json.loads(json.dumps(bounded_result), parse_constant=lambda name: math.nan / 0)


@pytest.mark.parametrize(
    ("task", "where"),
    [
        (
            {
                "²": {"class_type": "EmptyImage", "inputs": {}},
                "3": {"class_type": "X", "inputs": {}},
            },
            "",
        ),
        ({"1": {"class_type": "X", "inputs": {"v": float("inf")}}}, 'workflow["1"]["inputs"]["v"]'),
        ({"1": {"class_type": "X", "inputs": {"v": float("nan")}}}, 'workflow["1"]["inputs"]["v"]'),
        ({"1": {"class_type": "X", "inputs": {"v": "x\ud800"}}}, "lone surrogate"),
        ({"1": {"class_type": "X", "inputs": {"v": nested(900)}}}, "nested more than 64"),
        ({"1": {"class_type": "X", "inputs": {"v": 10**4400}}}, "64-bit range"),
    ],
    ids=["unicode-digit-id", "inf", "nan", "lone-surrogate", "900-deep", "huge-int"],
)
def test_hostile_values_are_invalid_workflow_naming_the_place(preparer: Any, task: Any, where: str):
    """Each hostile value is an invalid-workflow error naming where it is, never a crash."""
    from comfyui_worker.errors import InvalidWorkflowError

    try:
        preparer.request(task, Identity("p", "r"))
    except InvalidWorkflowError as error:
        assert where in error.message
    else:
        assert where == ""  # a unicode-digit id is a valid (if odd) node id


def test_error_amplification_is_bounded(preparer: Any):
    """300 bad overrides on a 1000-node graph give a small error, not a 15 MB report."""
    graph = {
        str(i): {"class_type": "KSampler", "inputs": {"seed": i, "steps": 20}} for i in range(1000)
    }
    overrides = {f"{i}.sed": 1 for i in range(150)} | {f"x{i}.seed": 1 for i in range(150)}
    task = {"workflow": graph, "overrides": overrides}
    assert json_size(task) > 70_000
    with pytest.raises(ComfyWorkerError) as info:
        preparer.request(task, Identity("p", "r"))
    report = json.dumps(info.value.content())
    assert len(report) < 32_000 and bounded(info.value)
    assert "and 280 more" in report


def test_a_run_result_is_a_model(tmp_path: Path):
    """The result crosses modules as a typed model with one JSON form for LittleHorse."""
    assert isinstance(result(), RunResult) and result().to_json()["status"] == "success"
