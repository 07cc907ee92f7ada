from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.preflight import combo_options, preflight
from tests import FIXTURES

FIXTURE = FIXTURES / "preflight" / "object_info_subset.json"


@pytest.fixture
def object_info() -> dict[str, Any]:
    """The /object_info subset captured from a real ComfyUI (no checkpoints installed)."""
    info: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return info


def sampler_graph() -> dict[str, dict[str, Any]]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["9", 0]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "seed": 1,
                "steps": 20,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "karras",
                "positive": ["6", 0],
                "negative": ["6", 0],
                "latent_image": ["4", 0],
                "denoise": 1.0,
            },
        },
    }


def problems_of(
    graph: dict[str, Any], object_info: dict[str, Any], **kwargs: Any
) -> list[dict[str, Any]]:
    with pytest.raises(InvalidWorkflowError) as info:
        preflight(graph, object_info, **kwargs)
    problems: list[dict[str, Any]] = info.value.details["problems"]
    assert all(problem["message"] in info.value.message for problem in problems)
    return problems


def test_valid_graph_passes(object_info: dict[str, Any]) -> None:
    """A graph ComfyUI would accept raises nothing."""
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    preflight(graph, object_info)


def test_links_are_not_checked_against_combos(object_info: dict[str, Any]) -> None:
    """A link into a COMBO input is left to ComfyUI."""
    preflight(sampler_graph(), object_info)


def test_unknown_node_type_suggests_close_names(object_info: dict[str, Any]) -> None:
    """A misspelt class_type gets close matches from /object_info."""
    graph = sampler_graph()
    graph["3"]["class_type"] = "Ksampler"
    [problem] = problems_of(graph, object_info)
    assert problem["problem"] == "unknown_node"
    assert problem["suggestions"] == ["KSampler"]
    assert problem["message"] == "node '3' (Ksampler): unknown node type (did you mean 'KSampler'?)"


def test_unknown_node_type_without_match_mentions_custom_nodes(object_info: dict[str, Any]) -> None:
    """A node type with no close match is probably from a missing custom node pack."""
    graph = {"1": {"class_type": "IPAdapterAdvanced", "inputs": {}}}
    [problem] = problems_of(graph, object_info)
    assert "custom node pack" in problem["message"]


def test_combo_value_gets_suggestions(object_info: dict[str, Any]) -> None:
    """A misspelt sampler name is reported with close matches."""
    graph = sampler_graph()
    graph["3"]["inputs"]["sampler_name"] = "euler_ancestal"
    [problem] = problems_of(graph, object_info)
    assert problem["node_id"] == "3" and problem["input"] == "sampler_name"
    assert problem["class_type"] == "KSampler"
    assert problem["suggestions"][0] == "euler_ancestral"
    assert "did you mean 'euler_ancestral'" in problem["message"]


def test_combo_value_without_match_lists_ten_values(object_info: dict[str, Any]) -> None:
    """Without a close match, up to ten available values are shown."""
    graph = sampler_graph()
    graph["3"]["inputs"]["sampler_name"] = "zzz"
    [problem] = problems_of(graph, object_info)
    assert "available: 'euler', 'euler_cfg_pp'" in problem["message"]
    assert "more)" in problem["message"]


def test_empty_model_list_says_nothing_is_installed(object_info: dict[str, Any]) -> None:
    """An empty checkpoint list means no checkpoints are installed."""
    graph = sampler_graph()
    graph["4"]["inputs"]["ckpt_name"] = "sd_xl_base_1.0.safetensors"
    [problem] = problems_of(graph, object_info)
    assert "no checkpoints installed in ComfyUI's models/checkpoints" in problem["message"]
    assert problem["value"] == "sd_xl_base_1.0.safetensors"


def test_model_in_a_subfolder_is_suggested(object_info: dict[str, Any]) -> None:
    """The same file name in a subfolder is the first suggestion."""
    info = copy.deepcopy(object_info)
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = [
        "SDXL/sd_xl_base_1.0.safetensors",
        "v1-5-pruned.safetensors",
    ]
    graph = sampler_graph()
    graph["4"]["inputs"]["ckpt_name"] = "sd_xl_base_1.0.safetensors"
    [problem] = problems_of(graph, info)
    assert problem["suggestions"][0] == "SDXL/sd_xl_base_1.0.safetensors"


def test_missing_required_inputs_are_listed(object_info: dict[str, Any]) -> None:
    """Each required input absent from the node is a problem."""
    graph = sampler_graph()
    del graph["3"]["inputs"]["steps"]
    del graph["3"]["inputs"]["cfg"]
    problems = problems_of(graph, object_info)
    assert [(p["problem"], p["input"]) for p in problems] == [
        ("missing_input", "steps"),
        ("missing_input", "cfg"),
    ]
    assert problems[0]["message"] == "node '3' (KSampler) input 'steps': required input is missing"


def test_all_problems_are_reported_in_node_order(object_info: dict[str, Any]) -> None:
    """Problems from several nodes come back together, nodes in numeric order."""
    graph = sampler_graph()
    graph["10"] = {"class_type": "Nope", "inputs": {}}
    graph["3"]["inputs"]["scheduler"] = "karas"
    graph["1"]["class_type"] = "EmptyImg"
    problems = problems_of(graph, object_info)
    assert [p["node_id"] for p in problems] == ["1", "3", "10"]


def test_uploaded_images_count_as_choices(object_info: dict[str, Any]) -> None:
    """A file this task uploads is accepted though /object_info cannot list it yet."""
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "t-face.png"}}}
    preflight(graph, object_info, uploaded={"t-face.png"})
    [problem] = problems_of(graph, object_info)
    assert "available: 'example.png'" in problem["message"]


def test_new_style_combo_options_are_checked() -> None:
    """Inputs declared as ["COMBO", {"options": [...]}] are checked too."""
    info = {"N": {"input": {"required": {"mode": ["COMBO", {"options": ["a", "b"]}]}}}}
    preflight({"1": {"class_type": "N", "inputs": {"mode": "a"}}}, info)
    [problem] = problems_of({"1": {"class_type": "N", "inputs": {"mode": "c"}}}, info)
    assert problem["input"] == "mode"


def test_optional_combo_inputs_are_checked() -> None:
    """Optional COMBO inputs, when given, must hold an allowed value."""
    info = {"N": {"input": {"required": {}, "optional": {"mode": [["a"], {}]}}}}
    preflight({"1": {"class_type": "N", "inputs": {}}}, info)
    problems_of({"1": {"class_type": "N", "inputs": {"mode": "b"}}}, info)


def test_combo_options_recognises_spec_shapes() -> None:
    """Only list-headed or COMBO specs have options."""
    assert combo_options([["a"], {}]) == ["a"]
    assert combo_options(["COMBO", {"options": ["x"]}]) == ["x"]
    assert combo_options(["INT", {"default": 1}]) is None
    assert combo_options([]) is None
