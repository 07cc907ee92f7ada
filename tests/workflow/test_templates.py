from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.overrides import apply_overrides
from comfyui_worker.workflow.params import SEED_LIMIT
from comfyui_worker.workflow.templates import Template, load_template, load_templates, render
from tests import ROOT

WORKFLOWS = ROOT / "workflows"

SAMPLE_VALUES: dict[str, Any] = {"int": 7, "float": 0.5, "string": "x", "bool": True, "any": 1}


def sdxl_like() -> dict[str, Any]:
    """A small txt2img-shaped graph with declared parameters."""
    return {
        "_params": {
            "seed": {"type": "int", "default": -1, "random": True, "targets": ["3.seed"]},
            "prompt": {"type": "string", "targets": ["6.text"], "description": "what to draw"},
            "steps": {"type": "int", "default": 20, "targets": ["3.steps"]},
            "cfg": {"type": "float", "default": 7.0, "targets": ["3.cfg"]},
            "subject": {"type": "string", "default": "a cat"},
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{subject}}", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": 0, "steps": 20, "cfg": 8.0, "model": ["4", 0], "positive": ["6", 0]},
        },
    }


def template(obj: dict[str, Any] | None = None) -> Template:
    return Template.from_graph(obj if obj is not None else sdxl_like(), name="t")


def write(directory: Path, name: str, content: object) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (directory / name).write_text(text, encoding="utf-8")


def test_sample_workflows_load_and_render() -> None:
    """Every shipped workflow loads cleanly and renders with its required params."""
    templates = load_templates(WORKFLOWS)
    assert templates.errors == {}
    assert len(templates) >= 6
    for name in templates.names():
        tmpl = templates.get(name)
        images = {spec.name for spec in tmpl.params.values() if spec.type == "image"}
        required = {
            spec.name: SAMPLE_VALUES[spec.type]
            for spec in tmpl.params.values()
            if spec.required and spec.type != "image"
        }
        rendered = render(tmpl, required, image_names=images)
        assert "_params" not in rendered.graph
        assert all(isinstance(node["class_type"], str) for node in rendered.graph.values())


def test_sample_workflows_describe_their_parameters() -> None:
    """describe() gives name, type, required, default and description for each param."""
    for tmpl in load_templates(WORKFLOWS).templates.values():
        for entry in tmpl.describe():
            assert {"name", "type", "required", "default", "description"} <= set(entry)
            assert entry["description"], f"{tmpl.name}.{entry['name']} has no description"


def test_broken_files_are_recorded_not_raised(tmp_path: Path) -> None:
    """Bad JSON, UI exports and bad _params are listed in errors; good files still load."""
    write(tmp_path, "good.json", {"1": {"class_type": "A", "inputs": {}}})
    write(tmp_path, "bad_json.json", "{not json")
    write(tmp_path, "ui.json", {"nodes": [], "links": []})
    write(tmp_path, "bad_type.json", {**sdxl_like(), "_params": {"x": {"type": "integer"}}})
    write(tmp_path, "notes.txt", "ignored")
    templates = load_templates(tmp_path)
    assert templates.names() == ["good"]
    assert set(templates.errors) == {"bad_json.json", "ui.json", "bad_type.json"}
    assert "line 1 column 2" in templates.errors["bad_json.json"]
    assert "Export (API)" in templates.errors["ui.json"]
    assert "'integer' is not one of" not in templates.errors["bad_type.json"]
    assert '"integer" is not one of' in templates.errors["bad_type.json"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"x": {"type": "int", "targets": ["9.seed"]}}, "there is no node '9'"),
        ({"x": {"type": "int", "targets": ["3.sed"]}}, "did you mean 'seed'?"),
        ({"x": {"type": "int", "targets": ["3.model"]}}, "is a link"),
        ({"x": {"type": "int", "targets": "3.seed"}}, "must be a list"),
        ({"x": {"type": "int"}}, "used nowhere"),
        ({"x": {"type": "int", "default": "1", "targets": ["3.seed"]}}, "must be int"),
        ({"x": {"type": "string", "random": True, "targets": ["3.seed"]}}, "needs type 'int'"),
        ({"x": {"required": True, "targets": ["3.seed"]}}, "required when it has no default"),
        ({"bad name": {"targets": ["3.seed"]}}, "parameter names must match"),
        ({"x": "int"}, "must be an object"),
    ],
)
def test_bad_param_declarations_are_explained(
    tmp_path: Path, params: dict[str, Any], expected: str
) -> None:
    """Each mistake in _params names the file, the parameter and the fix."""
    graph = sdxl_like()
    graph["_params"] = params
    write(tmp_path, "t.json", graph)
    with pytest.raises(InvalidWorkflowError) as info:
        load_template(tmp_path / "t.json")
    assert info.value.message.startswith("t.json: ")
    assert expected in info.value.message


def test_get_unknown_template_suggests_names(tmp_path: Path) -> None:
    """An unknown name gets a close match and the list of available templates."""
    write(tmp_path, "txt2img_sdxl.json", {"1": {"class_type": "A", "inputs": {}}})
    write(tmp_path, "upscale.json", {"1": {"class_type": "A", "inputs": {}}})
    with pytest.raises(InvalidWorkflowError) as info:
        load_templates(tmp_path).get("txt2img_sdx")
    assert "did you mean 'txt2img_sdxl'?" in info.value.message
    assert "'upscale'" in info.value.message
    assert info.value.details["available"] == ["txt2img_sdxl", "upscale"]


def test_get_broken_template_gives_the_load_error(tmp_path: Path) -> None:
    """Asking for a template that failed to load says why it failed."""
    write(tmp_path, "broken.json", "[]")
    with pytest.raises(InvalidWorkflowError, match="template 'broken' failed to load"):
        load_templates(tmp_path).get("broken")


def test_missing_directory_gives_empty_set(tmp_path: Path) -> None:
    """A missing directory is not an error until a template is asked for."""
    templates = load_templates(tmp_path / "nope")
    assert len(templates) == 0
    with pytest.raises(InvalidWorkflowError, match="COMFYUI_WORKFLOWS_DIR"):
        templates.get("x")


def test_targets_receive_typed_values() -> None:
    """A parameter written to a target keeps its type."""
    rendered = render(template(), {"prompt": "a dog", "steps": 30, "seed": 5})
    inputs = rendered.graph["3"]["inputs"]
    assert inputs["steps"] == 30 and isinstance(inputs["steps"], int)
    assert inputs["seed"] == 5
    assert inputs["cfg"] == 7.0
    assert rendered.graph["6"]["inputs"]["text"] == "a dog"
    assert rendered.graph["7"]["inputs"]["text"] == "a cat"
    assert "_params" not in rendered.graph


def test_random_seed_is_drawn_and_reported() -> None:
    """Omitted or -1 seeds are drawn in [0, 2**53) and returned in params."""
    for params in ({"prompt": "p"}, {"prompt": "p", "seed": -1}):
        rendered = render(template(), params)
        seed = rendered.params["seed"]
        assert 0 <= seed < SEED_LIMIT
        assert rendered.graph["3"]["inputs"]["seed"] == seed


def test_resolved_params_include_defaults() -> None:
    """Rendered.params holds every value that went into the graph."""
    rendered = render(template(), {"prompt": "p", "seed": 1})
    assert rendered.params == {
        "seed": 1,
        "prompt": "p",
        "steps": 20,
        "cfg": 7.0,
        "subject": "a cat",
    }


def test_all_missing_params_are_listed_at_once() -> None:
    """Every missing required parameter is in one error."""
    graph = sdxl_like()
    graph["7"]["inputs"]["text"] = "{{style}} {{subject}}"
    with pytest.raises(InvalidWorkflowError) as info:
        render(template(graph), {})
    assert info.value.details["missing"] == ["prompt", "style"]
    assert "'prompt' (string: what to draw)" in info.value.message


def test_unknown_param_suggests_a_name() -> None:
    """A misspelt parameter gets a did-you-mean and the known names."""
    with pytest.raises(InvalidWorkflowError) as info:
        render(template(), {"prompt": "p", "sed": 1})
    assert "unknown parameter 'sed' (did you mean 'seed'?)" in info.value.message
    assert "seed" in info.value.details["known"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"steps": "ten"}, "parameter 'steps' must be int, got string 'ten'"),
        ({"steps": True}, "parameter 'steps' must be int, got bool true"),
        ({"steps": 2.5}, "parameter 'steps' must be int, got float 2.5"),
        ({"cfg": "high"}, "parameter 'cfg' must be float, got string 'high'"),
        ({"prompt": 5}, "parameter 'prompt' must be string, got int 5"),
    ],
)
def test_wrong_types_are_named(params: dict[str, Any], expected: str) -> None:
    """Type errors name the parameter, the wanted type and what was sent."""
    with pytest.raises(InvalidWorkflowError) as info:
        render(template(), {"prompt": "p", **params})
    assert expected in info.value.message


def bounded() -> dict[str, Any]:
    """sdxl_like with bounds: steps 1..100, cfg at most 30, a sampler from a list."""
    graph = sdxl_like()
    graph["_params"]["steps"].update({"min": 1, "max": 100})
    graph["_params"]["cfg"]["max"] = 30
    graph["_params"]["sampler"] = {
        "type": "string",
        "default": "euler",
        "choices": ["euler", "dpmpp_2m"],
        "targets": ["3.sampler_name"],
    }
    graph["3"]["inputs"]["sampler_name"] = "euler"
    return graph


@pytest.mark.parametrize(
    ("params", "field", "expected"),
    [
        ({"steps": 0}, "steps", "must be at least 1, got 0"),
        ({"steps": 101}, "steps", "must be at most 100, got 101"),
        ({"cfg": 30.5}, "cfg", "must be at most 30, got 30.5"),
        ({"sampler": "eular"}, "sampler", "must be one of 'euler', 'dpmpp_2m', got 'eular'"),
        ({"steps": "ten"}, "steps", "must be int, got string 'ten'"),
    ],
)
def test_values_outside_their_bounds_are_refused_per_field(
    params: dict[str, Any], field: str, expected: str
) -> None:
    """min, max and choices are checked; the error names the field for a form to mark."""
    with pytest.raises(InvalidWorkflowError) as info:
        render(template(bounded()), {"prompt": "p", **params})
    assert f"parameter '{field}' {expected}" in info.value.message
    [(marked, problem)] = info.value.details["fields"].items()
    assert marked == field and problem.startswith(expected)


def test_a_choice_error_suggests_the_close_one_and_bounds_are_described() -> None:
    """'eular' gets a did-you-mean; describe() carries min, max and choices for the page."""
    with pytest.raises(InvalidWorkflowError, match="did you mean 'euler'"):
        render(template(bounded()), {"prompt": "p", "sampler": "eular"})
    described = {p["name"]: p for p in template(bounded()).describe()}
    assert described["steps"]["min"] == 1 and described["steps"]["max"] == 100
    assert described["sampler"]["choices"] == ["euler", "dpmpp_2m"]
    assert "min" not in described["prompt"] and "choices" not in described["seed"]
    rendered = render(template(bounded()), {"prompt": "p", "steps": 100, "sampler": "dpmpp_2m"})
    assert rendered.graph["3"]["inputs"]["steps"] == 100


def test_missing_and_ambiguous_parameters_are_marked_too() -> None:
    """A missing required parameter is 'required' in fields, beside the message."""
    with pytest.raises(InvalidWorkflowError) as info:
        render(template(bounded()), {"steps": 0})
    assert info.value.details["fields"] == {
        "prompt": "required",
        "steps": "must be at least 1, got 0",
    }


@pytest.mark.parametrize(
    ("decl", "expected"),
    [
        ({"type": "string", "min": 1}, "only int and float parameters have one"),
        ({"type": "int", "max": "ten"}, "max must be a number"),
        ({"type": "int", "choices": ["a"]}, "only string parameters have them"),
        ({"type": "string", "choices": []}, "must be a non-empty list of strings"),
        ({"type": "int", "default": 0, "min": 1}, "default: must be at least 1, got 0"),
        ({"type": "string", "default": "z", "choices": ["a"]}, "default: must be one of 'a'"),
    ],
)
def test_bad_bounds_are_explained(tmp_path: Path, decl: dict[str, Any], expected: str) -> None:
    """A bound of the wrong kind, or a default outside its own bounds, breaks the template."""
    graph = sdxl_like()
    graph["_params"]["x"] = {**decl, "targets": ["3.seed"]}
    write(tmp_path, "t.json", graph)
    with pytest.raises(InvalidWorkflowError) as info:
        load_template(tmp_path / "t.json")
    assert expected in info.value.message


def test_numbers_are_converted_where_harmless() -> None:
    """An int is accepted for a float and an integral float for an int."""
    rendered = render(template(), {"prompt": "p", "cfg": 5, "steps": 12.0})
    assert rendered.graph["3"]["inputs"]["cfg"] == 5.0
    assert isinstance(rendered.graph["3"]["inputs"]["cfg"], float)
    assert rendered.graph["3"]["inputs"]["steps"] == 12
    assert isinstance(rendered.graph["3"]["inputs"]["steps"], int)


def test_exact_placeholder_keeps_the_value_type() -> None:
    """'{{name}}' alone is replaced by the JSON value itself: int, dict, list."""
    graph = {
        "1": {
            "class_type": "A",
            "inputs": {"n": "{{n}}", "cfg": "{{ cfg }}", "nested": ["{{n}}", {"deep": "{{cfg}}"}]},
        }
    }
    rendered = render(graph, {"n": 3, "cfg": {"a": 1}})
    inputs = rendered.graph["1"]["inputs"]
    assert inputs["n"] == 3
    assert inputs["cfg"] == {"a": 1}
    assert inputs["nested"] == [3, {"deep": {"a": 1}}]


def test_placeholder_inside_text_is_replaced_as_text() -> None:
    """A placeholder in a longer string becomes text; non-strings become JSON text."""
    graph = {"1": {"class_type": "A", "inputs": {"text": "a photo of {{subject}}, {{n}}x, {{b}}"}}}
    rendered = render(graph, {"subject": "a cat", "n": 4, "b": False})
    assert rendered.graph["1"]["inputs"]["text"] == "a photo of a cat, 4x, false"


def test_undeclared_placeholders_are_required_any() -> None:
    """A placeholder without a declaration is a required parameter of type any."""
    graph = {"1": {"class_type": "A", "inputs": {"text": "{{x}}"}}}
    spec = template(graph).params["x"]
    assert spec.required and spec.type == "any"
    with pytest.raises(InvalidWorkflowError, match="missing required parameters: 'x'"):
        render(graph, {})


def test_legacy_prompt_placeholder() -> None:
    """PROMPT_PLACEHOLDER is parameter 'prompt', exact or inside text."""
    graph = {
        "1": {"class_type": "A", "inputs": {"text": "PROMPT_PLACEHOLDER"}},
        "2": {"class_type": "A", "inputs": {"text": "best quality, PROMPT_PLACEHOLDER"}},
    }
    rendered = render(graph, {"prompt": "a fox"})
    assert rendered.graph["1"]["inputs"]["text"] == "a fox"
    assert rendered.graph["2"]["inputs"]["text"] == "best quality, a fox"
    with pytest.raises(InvalidWorkflowError, match="'prompt'"):
        render(graph, {})


def test_braced_marker_is_its_own_parameter_not_prompt() -> None:
    """ "{{PROMPT_PLACEHOLDER}}" is a parameter of that name: 'prompt' is neither listed nor needed."""
    graph = {"1": {"class_type": "A", "inputs": {"text": "a {{PROMPT_PLACEHOLDER}} b"}}}
    assert set(template(graph).params) == {"PROMPT_PLACEHOLDER"}
    rendered = render(graph, {"PROMPT_PLACEHOLDER": "fox"})
    assert rendered.graph["1"]["inputs"]["text"] == "a fox b"


def test_legacy_seed_placeholder_is_random_unless_given() -> None:
    """SEED_PLACEHOLDER is an int seed: drawn when omitted or -1, kept when given."""
    graph = {"1": {"class_type": "KSampler", "inputs": {"seed": "SEED_PLACEHOLDER"}}}
    drawn = render(graph, {})
    assert isinstance(drawn.graph["1"]["inputs"]["seed"], int)
    assert drawn.params["seed"] == drawn.graph["1"]["inputs"]["seed"]
    assert render(graph, {"seed": 42}).graph["1"]["inputs"]["seed"] == 42
    with pytest.raises(InvalidWorkflowError, match="must be int"):
        render(graph, {"seed": "42"})


def test_declared_param_wins_over_placeholder_discovery() -> None:
    """A declaration gives a placeholder its type and default."""
    graph: dict[str, Any] = {
        "_params": {"n": {"type": "int", "default": 2}},
        "1": {"class_type": "A", "inputs": {"n": "{{n}}"}},
    }
    assert render(graph, {}).graph["1"]["inputs"]["n"] == 2
    with pytest.raises(InvalidWorkflowError, match="must be int"):
        render(graph, {"n": "two"})


def test_links_are_never_substituted() -> None:
    """A link whose node id looks like a placeholder is left alone."""
    graph = {
        "{{x}}": {"class_type": "A", "inputs": {}},
        "2": {"class_type": "B", "inputs": {"a": ["{{x}}", 0], "t": "{{x}}"}},
    }
    rendered = render(graph, {"x": "v"})
    assert rendered.graph["2"]["inputs"] == {"a": ["{{x}}", 0], "t": "v"}


def test_template_graph_is_never_mutated() -> None:
    """Rendering twice from one template starts from the same graph."""
    tmpl = template()
    before = copy.deepcopy(tmpl.graph)
    render(tmpl, {"prompt": "p"}, {"3.steps": 99})
    assert tmpl.graph == before


def test_overrides_apply_after_params() -> None:
    """An override wins over a parameter targeting the same input."""
    rendered = render(template(), {"prompt": "p", "steps": 10}, {"3.steps": 40, "6.text": "q"})
    assert rendered.graph["3"]["inputs"]["steps"] == 40
    assert rendered.graph["6"]["inputs"]["text"] == "q"


def test_override_key_splits_at_the_last_dot() -> None:
    """Node ids may contain dots; the input name is after the last one."""
    graph: dict[str, dict[str, Any]] = {"1.5": {"class_type": "A", "inputs": {"seed": 1}}}
    apply_overrides(graph, {"1.5.seed": 2})
    assert graph["1.5"]["inputs"]["seed"] == 2


def test_override_unknown_node_lists_node_ids() -> None:
    """An unknown node id is reported with the ids that exist."""
    with pytest.raises(InvalidWorkflowError) as info:
        render(template(), {"prompt": "p"}, {"99.seed": 1})
    assert "there is no node '99'" in info.value.message
    assert "'3', '4', '6', '7'" in info.value.message


def test_override_unknown_input_suggests_names() -> None:
    """An unknown input gets a did-you-mean and the node's input names."""
    with pytest.raises(InvalidWorkflowError) as info:
        apply_overrides(template().graph, {"3.sed": 1})
    assert "node '3' (KSampler) has no input 'sed' (did you mean 'seed'?)" in info.value.message
    assert "'steps'" in info.value.message


def test_override_key_without_dot_is_rejected() -> None:
    """Keys must be node_id.input_name."""
    with pytest.raises(InvalidWorkflowError, match=r"node_id\.input_name"):
        apply_overrides(template().graph, {"seed": 1})


def test_override_cannot_cut_a_link() -> None:
    """Replacing a link with a plain value is refused; another link is fine."""
    graph = copy.deepcopy(template().graph)
    with pytest.raises(InvalidWorkflowError, match="is a link from node '4'"):
        apply_overrides(graph, {"3.model": "m"})
    apply_overrides(graph, {"3.model": ["6", 0]})
    assert graph["3"]["inputs"]["model"] == ["6", 0]


def test_override_link_must_target_an_existing_node() -> None:
    """A new link to a missing node is refused."""
    with pytest.raises(InvalidWorkflowError, match="links to node '8', which does not exist"):
        apply_overrides(template().graph, {"3.model": ["8", 0]})


def test_override_errors_are_collected() -> None:
    """All bad overrides are reported together."""
    with pytest.raises(InvalidWorkflowError) as info:
        apply_overrides(template().graph, {"3.sed": 1, "99.x": 2})
    assert len(info.value.details["problems"]) == 2


def test_overrides_work_on_raw_graphs() -> None:
    """A raw graph without parameters can still be overridden."""
    graph = {"1": {"class_type": "A", "inputs": {"seed": 1}}}
    assert render(graph, None, {"1.seed": 9}).graph["1"]["inputs"]["seed"] == 9


def test_image_placeholders_are_left_for_binding() -> None:
    """Placeholders naming input images are neither required nor unknown."""
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "{{face}}"}}}
    rendered = render(graph, {}, image_names={"face"})
    assert rendered.graph["1"]["inputs"]["image"] == "{{face}}"
    assert rendered.params == {}


def test_image_param_is_required_without_an_image() -> None:
    """A declared image parameter says how to send the image when it is missing."""
    graph: dict[str, Any] = {
        "_params": {"image": {"type": "image"}},
        "1": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
    }
    with pytest.raises(InvalidWorkflowError, match=re.escape('add {"name": "image"')):
        render(graph, {})
    assert render(graph, {}, image_names={"image"}).graph["1"]["inputs"]["image"] == "{{image}}"
    by_name = render(graph, {"image": "already_there.png"})
    assert by_name.graph["1"]["inputs"]["image"] == "already_there.png"


def test_image_param_targets_get_a_placeholder() -> None:
    """An image parameter with targets writes its placeholder there for binding."""
    graph: dict[str, Any] = {
        "_params": {"image": {"type": "image", "targets": ["1.image"]}},
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    }
    rendered = render(graph, {}, image_names={"image"})
    assert rendered.graph["1"]["inputs"]["image"] == "{{image}}"


def test_name_given_as_param_and_image_is_ambiguous() -> None:
    """The same name as a parameter and an image is refused."""
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "{{face}}"}}}
    with pytest.raises(InvalidWorkflowError, match="both as a parameter and as an image"):
        render(graph, {"face": "x.png"}, image_names={"face"})


def test_raw_graph_may_carry_params() -> None:
    """A submitted graph with _params behaves like a template."""
    graph = sdxl_like()
    rendered = render(graph, {"prompt": "p"})
    assert rendered.graph["6"]["inputs"]["text"] == "p"
    assert "_params" in graph


def test_describe_lists_required_first() -> None:
    """describe() puts required parameters first and reports defaults."""
    described = template().describe()
    assert described[0]["name"] == "prompt" and described[0]["required"] is True
    seed = next(entry for entry in described if entry["name"] == "seed")
    assert seed == {
        "name": "seed",
        "type": "int",
        "required": False,
        "default": -1,
        "random": True,
        "description": "",
    }


def test_render_errors_name_the_template() -> None:
    """Errors from a loaded template name it; a raw graph is 'workflow'."""
    with pytest.raises(
        InvalidWorkflowError, match=r"^invalid-workflow: template 'txt2img_sdxl': missing"
    ):
        render(load_template(WORKFLOWS / "txt2img_sdxl.json"), {})
    with pytest.raises(InvalidWorkflowError, match=r"^invalid-workflow: workflow: missing"):
        render({"1": {"class_type": "A", "inputs": {"t": "{{x}}"}}}, {})
