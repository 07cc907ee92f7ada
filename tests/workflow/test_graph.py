from __future__ import annotations

from typing import Any

import pytest

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.graph import is_ui_format, sorted_ids, validate_graph
from comfyui_worker.workflow.placeholders import is_link
from comfyui_worker.workflow.suggest import close_matches, did_you_mean, quote_list


def small_graph() -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "x"},
            "_meta": {"title": "Save"},
        },
    }


def test_valid_graph_is_returned_unchanged_and_uncopied() -> None:
    """Validation happens once at the boundary: the graph itself comes back, not a copy."""
    graph = small_graph()
    assert validate_graph(graph) is graph
    assert graph == small_graph()


def test_ui_format_explains_how_to_export_api_format() -> None:
    """A UI export is recognised and the error says how to get the API format."""
    with pytest.raises(InvalidWorkflowError) as info:
        validate_graph({"nodes": [], "links": [], "version": 0.4})
    assert "Export (API)" in info.value.message
    assert "Save (API Format)" in info.value.message


def test_non_object_is_rejected_with_its_type() -> None:
    """A list is not a graph; the error says what was received."""
    with pytest.raises(InvalidWorkflowError, match="got list"):
        validate_graph([1, 2])


def test_empty_graph_is_rejected() -> None:
    """ComfyUI would answer 500 to an empty prompt, so it is caught here."""
    with pytest.raises(InvalidWorkflowError, match="no nodes"):
        validate_graph({}, source="template 'x'")


def test_node_that_is_not_an_object_is_named() -> None:
    """The node id of a malformed node appears in the message."""
    with pytest.raises(InvalidWorkflowError, match="node '7' must be an object"):
        validate_graph({"7": "KSampler"})


def test_missing_class_type_names_node_and_field() -> None:
    """A node without class_type is reported with its id and the field."""
    with pytest.raises(InvalidWorkflowError, match="node '3': 'class_type' must be"):
        validate_graph({"3": {"inputs": {}}})


def test_blank_class_type_is_rejected() -> None:
    """An empty class_type string is as bad as none."""
    with pytest.raises(InvalidWorkflowError, match="'class_type'"):
        validate_graph({"3": {"class_type": " ", "inputs": {}}})


def test_inputs_must_be_an_object() -> None:
    """Missing or non-object inputs name the node and its class."""
    with pytest.raises(InvalidWorkflowError, match=r"node '3' \(KSampler\): 'inputs' must be"):
        validate_graph({"3": {"class_type": "KSampler", "inputs": []}})


def test_meta_must_be_an_object() -> None:
    """A non-object _meta is reported."""
    with pytest.raises(InvalidWorkflowError, match="'_meta' must be an object"):
        validate_graph({"1": {"class_type": "A", "inputs": {}, "_meta": "title"}})


def test_link_to_missing_node_names_both_nodes() -> None:
    """A dangling link names the node, its input and the missing target."""
    graph = small_graph()
    graph["2"]["inputs"]["images"] = ["9", 0]
    with pytest.raises(InvalidWorkflowError) as info:
        validate_graph(graph)
    assert "node '2' (SaveImage) input 'images' links to node '9'" in info.value.message


def test_negative_output_index_is_rejected() -> None:
    """Output indexes start at zero."""
    graph = small_graph()
    graph["2"]["inputs"]["images"] = ["1", -1]
    with pytest.raises(InvalidWorkflowError, match="output -1"):
        validate_graph(graph)


def test_integer_node_id_in_link_gets_a_hint() -> None:
    """ComfyUI only follows links whose node id is a string; the fix is shown."""
    graph = small_graph()
    graph["2"]["inputs"]["images"] = [1, 0]
    with pytest.raises(InvalidWorkflowError, match=r'write \["1", 0\]'):
        validate_graph(graph)


def test_all_problems_are_reported_together() -> None:
    """Several broken nodes yield one error listing each."""
    with pytest.raises(InvalidWorkflowError) as info:
        validate_graph({"1": {"inputs": {}}, "2": {"class_type": "A"}, "3": 5})
    assert len(info.value.details["problems"]) == 3


def test_prompt_request_body_gets_a_hint() -> None:
    """A whole /prompt body is recognised and the user told to unwrap it."""
    with pytest.raises(InvalidWorkflowError, match="'prompt' key"):
        validate_graph({"prompt": small_graph(), "client_id": "x"})


def test_source_names_the_origin() -> None:
    """The source label starts the message, so a template file can be named."""
    with pytest.raises(InvalidWorkflowError, match=r"invalid-workflow: upscale\.json is not"):
        validate_graph({"1": {}}, source="upscale.json")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(["1", 0], True), (["1", 0.5], False), ([1, 0], False), (["1", True], False), ("1", False)],
)
def test_is_link_follows_comfyui(value: object, expected: bool) -> None:
    """Only [str, int] pairs are links."""
    assert is_link(value) is expected


def test_is_ui_format_needs_both_arrays() -> None:
    """A graph with a node called 'nodes' is not mistaken for a UI export."""
    assert is_ui_format({"nodes": [], "links": []})
    assert not is_ui_format({"nodes": {"class_type": "A", "inputs": {}}})


def test_close_matches_ignore_case_and_keep_spelling() -> None:
    """Suggestions are found case-insensitively and returned as spelt."""
    assert close_matches("ksampler", ["KSampler", "VAEDecode"]) == ["KSampler"]
    assert did_you_mean("sed", ["seed", "steps"]) == " (did you mean 'seed'?)"
    assert did_you_mean("zzz", ["seed"]) == ""


def test_sorted_ids_are_numeric_first() -> None:
    """Numeric ids sort as numbers, others after them."""
    assert sorted_ids(["10", "9", "a", "1"]) == ["1", "9", "10", "a"]


def test_sorted_ids_never_convert_hostile_ids() -> None:
    """Unicode digits and ids of thousands of digits sort without int() blowing up."""
    huge = "9" * 5000
    assert sorted_ids([huge, "²", "10", "2"]) == ["2", "10", huge, "²"]


def test_lists_in_messages_are_capped() -> None:
    """A candidate list longer than ten says how many more there are."""
    assert quote_list(range(25)) == ", ".join(f"'{i}'" for i in range(10)) + ", ... (15 more)"
