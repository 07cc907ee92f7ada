from __future__ import annotations

from typing import Any

import pytest

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.taskinput import (
    ImageInput,
    TaskInput,
    parse_task_input,
    task_input_json_schema,
)

GRAPH: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
}


def test_raw_graph_becomes_workflow() -> None:
    """A bare API-format graph means {"workflow": graph}."""
    parsed = parse_task_input(GRAPH)
    assert parsed == TaskInput(workflow=GRAPH)
    assert parsed.template is None and parsed.params == {} and parsed.images == []


def test_envelope_with_template() -> None:
    """An envelope carries template, params, overrides and images."""
    parsed = parse_task_input(
        {
            "template": "txt2img_sdxl",
            "params": {"prompt": "a cat"},
            "overrides": {"3.steps": 30},
            "images": [{"name": "face", "path": "in/face.png"}],
        }
    )
    assert parsed.template == "txt2img_sdxl"
    assert parsed.params == {"prompt": "a cat"}
    assert parsed.overrides == {"3.steps": 30}
    assert parsed.images == [ImageInput(name="face", path="in/face.png")]
    assert parsed.image_names == {"face"}
    assert parsed.images[0].source == "path"


def test_envelope_with_workflow() -> None:
    """An envelope may carry the graph itself."""
    assert parse_task_input({"workflow": GRAPH, "params": {}}).workflow == GRAPH


def test_graph_with_node_named_template_stays_a_graph() -> None:
    """A node whose id happens to be 'template' is not taken for an envelope."""
    graph = {"template": {"class_type": "EmptyImage", "inputs": {}}}
    assert parse_task_input(graph).workflow == graph


@pytest.mark.parametrize(
    "obj", [{"nodes": [], "links": []}, {"workflow": {"nodes": [], "links": []}}]
)
def test_ui_format_is_explained(obj: dict[str, Any]) -> None:
    """A UI export, bare or in an envelope, gets the Export (API) hint."""
    with pytest.raises(InvalidWorkflowError, match=r"Export \(API\)"):
        parse_task_input(obj)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {"workflow": GRAPH, "template": "x"},
            "exactly one of 'workflow' and 'template', got both",
        ),
        ({"workflow": None, "params": {}}, "got neither"),
        ({"template": ""}, "template: String should have at least 1 character"),
        ({"template": 5}, "template: Input should be a valid string"),
        ({"template": "x", "params": []}, "params: Input should be a valid dictionary"),
    ],
)
def test_envelope_errors_name_the_field(obj: dict[str, Any], expected: str) -> None:
    """Envelope mistakes are reported with the field at fault."""
    with pytest.raises(InvalidWorkflowError) as info:
        parse_task_input(obj)
    assert expected in info.value.message


def test_unknown_envelope_key_is_named_with_suggestion() -> None:
    """An unknown key is named, with a did-you-mean and the allowed keys."""
    with pytest.raises(InvalidWorkflowError) as info:
        parse_task_input({"template": "x", "parms": {"a": 1}})
    assert "unknown key 'parms' (did you mean 'params'?)" in info.value.message
    assert "'overrides'" in info.value.message


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({"name": "a"}, "images[0]: image 'a' needs exactly one of"),
        ({"name": "a", "base64": "x", "url": "http://h"}, "got 'base64', 'url'"),
        ({"name": "a", "base64": ""}, "images[0].base64: String should have at least 1"),
        ({"name": "", "base64": "x"}, "images[0].name: String should have at least 1"),
        ({"name": "n" * 101, "base64": "x"}, "images[0].name: String should have at most 100"),
        ({"name": "a", "file": "x"}, "unknown key 'file' in images[0]"),
    ],
)
def test_image_errors_name_the_field_path(image: dict[str, Any], expected: str) -> None:
    """Image mistakes are reported as images[i].field."""
    with pytest.raises(InvalidWorkflowError) as info:
        parse_task_input({"template": "x", "images": [image]})
    assert expected in info.value.message


def test_duplicate_image_names_are_rejected() -> None:
    """Two images cannot share a name, since the graph refers to them by name."""
    images = [{"name": "a", "base64": "x"}, {"name": "a", "path": "p.png"}]
    with pytest.raises(InvalidWorkflowError, match="'a' repeated"):
        parse_task_input({"template": "x", "images": images})


def test_every_error_is_listed() -> None:
    """Several envelope problems come back in one error, each in details."""
    with pytest.raises(InvalidWorkflowError) as info:
        parse_task_input({"template": 5, "params": [], "extra": 1})
    assert len(info.value.details["errors"]) == 3


@pytest.mark.parametrize("obj", [[GRAPH], "graph", None, 3])
def test_non_object_is_rejected(obj: object) -> None:
    """The task input must be a JSON object."""
    with pytest.raises(InvalidWorkflowError, match="must be a JSON object"):
        parse_task_input(obj)


def test_json_schema_describes_the_envelope() -> None:
    """The schema lists the envelope fields and forbids others."""
    schema = task_input_json_schema()
    assert set(schema["properties"]) == {
        "workflow",
        "template",
        "params",
        "overrides",
        "images",
        "output",
        "models",
    }
    assert schema["additionalProperties"] is False
    image = schema["$defs"]["ImageInput"]
    assert set(image["properties"]) == {"name", "base64", "path", "url"}
    assert image["properties"]["name"]["maxLength"] == 100
    assert schema["examples"]


def test_an_output_prefix_files_the_run_under_it():
    """`output.prefix` puts the run folder under a caller-chosen relative path."""
    from comfyui_worker.workflow.request import Identity
    from tests.conftest import _PREPARER
    from tests.graphs import smoke

    task = {"workflow": smoke(), "output": {"prefix": "conversations/c42/images"}}
    request = _PREPARER.request(task, Identity("p", "wf/guid"))
    assert request.run_key == "conversations/c42/images/wf/guid"


@pytest.mark.parametrize(
    "prefix", ["/abs", "a/../b", "..", "a//b", "a/./b", "sp ace", "x" * 201, "é"]
)
def test_an_unsafe_output_prefix_is_refused(prefix: str):
    """Absolute prefixes, '..' and anything but plain segments are invalid-workflow."""
    from tests.graphs import smoke

    with pytest.raises(InvalidWorkflowError, match=r"output\.prefix"):
        parse_task_input({"workflow": smoke(), "output": {"prefix": prefix}})
