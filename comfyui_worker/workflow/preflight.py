"""Check a graph against ComfyUI's ``/object_info`` before submitting it.

ComfyUI reports only the first few problems of a prompt, in its own terms; this
check lists every unknown node type, missing required input and unavailable choice
(a model that is not installed, a misspelt sampler) at once, with suggestions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any

from comfyui_worker.bounds import capped
from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.graph import Graph, sorted_ids
from comfyui_worker.workflow.placeholders import is_link
from comfyui_worker.workflow.suggest import ask, close_matches, quote_list

# Where ComfyUI looks for the files a loader's choice list is built from.
_FOLDER_BY_CLASS = {
    "UpscaleModelLoader": "upscale_models",
    "CLIPVisionLoader": "clip_vision",
    "UNETLoader": "diffusion_models",
    "CLIPLoader": "text_encoders",
    "DualCLIPLoader": "text_encoders",
    "TripleCLIPLoader": "text_encoders",
}
_FOLDER_BY_INPUT = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "control_net_name": "controlnet",
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
    "model_name": "upscale_models",
}
_FOLDER_NOUN = {"checkpoints": "checkpoints", "loras": "LoRAs", "vae": "VAEs"}


def combo_options(spec: object) -> list[Any] | None:
    """Return the allowed values of a COMBO input spec, or None for other input types.

    Both the classic form ``[["a", "b"], {...}]`` and the newer
    ``["COMBO", {"options": ["a", "b"]}]`` are understood.
    """
    if not isinstance(spec, list | tuple) or not spec:
        return None
    head = spec[0]
    if isinstance(head, list):
        return head
    if head == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return options if isinstance(options, list) else None
    return None


def _input_specs(info: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the required and optional input specs of one ``/object_info`` entry."""
    inputs = info.get("input") if isinstance(info, dict) else None
    if not isinstance(inputs, dict):
        return {}, {}
    required = inputs.get("required")
    optional = inputs.get("optional")
    return (
        required if isinstance(required, dict) else {},
        optional if isinstance(optional, dict) else {},
    )


def _problem(
    node_id: str, class_type: str, input_name: str | None, kind: str, text: str, **extra: Any
) -> dict[str, Any]:
    """Build one machine-readable problem whose message names node, class and input."""
    where = f"node '{node_id}' ({class_type})"
    if input_name is not None:
        where += f" input '{input_name}'"
    return {
        "node_id": node_id,
        "class_type": class_type,
        "input": input_name,
        "problem": kind,
        "message": f"{where}: {text}",
        **extra,
    }


def _empty_choices(class_type: str, input_name: str) -> str:
    """Explain an empty choice list: usually nothing is installed in a model folder."""
    if input_name == "image":
        return "ComfyUI offers no choices: there are no images in ComfyUI's input directory"
    folder = _FOLDER_BY_CLASS.get(class_type) or _FOLDER_BY_INPUT.get(input_name)
    if folder is None:
        return "ComfyUI offers no choices for it (are the files it lists installed?)"
    noun = _FOLDER_NOUN.get(folder, f"{folder} files")
    return f"no {noun} installed in ComfyUI's models/{folder}"


def _suggestions(value: Any, options: list[Any]) -> list[str]:
    """Suggest the same file in a subfolder first, then spelling neighbours."""
    if not isinstance(value, str):
        return []
    texts = [str(option) for option in options]
    base = value.replace("\\", "/").rsplit("/", 1)[-1].lower()
    same_file = [t for t in texts if t.replace("\\", "/").rsplit("/", 1)[-1].lower() == base]
    close = [t for t in close_matches(value, texts) if t not in same_file]
    return (same_file + close)[:3]


def _combo_problem(
    node_id: str, class_type: str, input_name: str, value: Any, options: list[Any]
) -> dict[str, Any]:
    """Describe a value that is not among a COMBO input's choices."""
    shown = f"'{value}'" if isinstance(value, str) else repr(value)
    if not options:
        text = f"{shown} is not available: {_empty_choices(class_type, input_name)}"
        return _problem(node_id, class_type, input_name, "value_not_in_list", text, value=value)
    suggestions = _suggestions(value, options)
    hint = ask(suggestions) if suggestions else "; available: " + quote_list(options)
    return _problem(
        node_id,
        class_type,
        input_name,
        "value_not_in_list",
        f"{shown} is not one of ComfyUI's choices{hint}",
        value=value,
        suggestions=suggestions,
    )


def _accepted(value: Any, options: list[Any], uploaded: Collection[str]) -> bool:
    """Links are checked by ComfyUI at run time; uploaded files are not listed yet."""
    return is_link(value) or value in options or (isinstance(value, str) and value in uploaded)


def _node_problems(
    node_id: str, node: Mapping[str, Any], object_info: Mapping[str, Any], uploaded: Collection[str]
) -> list[dict[str, Any]]:
    """List one node's problems: unknown type, missing inputs, unavailable choices."""
    class_type = str(node["class_type"])
    if class_type not in object_info:
        suggestions = close_matches(class_type, object_info)
        hint = ask(suggestions) if suggestions else "; is the custom node pack installed?"
        text = f"unknown node type{hint}"
        return [_problem(node_id, class_type, None, "unknown_node", text, suggestions=suggestions)]
    required, optional = _input_specs(object_info[class_type])
    inputs: Mapping[str, Any] = node["inputs"]
    problems = [
        _problem(node_id, class_type, name, "missing_input", "required input is missing")
        for name in required
        if name not in inputs
    ]
    for name, value in inputs.items():
        options = combo_options(required.get(name, optional.get(name)))
        if options is not None and not _accepted(value, options, uploaded):
            problems.append(_combo_problem(node_id, class_type, name, value, options))
    return problems


def find_problems(
    graph: Graph, object_info: Mapping[str, Any], *, uploaded: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Every problem ComfyUI would reject, one dict each (node, input, value, message)."""
    problems: list[dict[str, Any]] = []
    for node_id in sorted_ids(graph):
        problems.extend(_node_problems(node_id, graph[node_id], object_info, uploaded))
    return problems


def preflight(
    graph: Graph, object_info: Mapping[str, Any], *, uploaded: Collection[str] = ()
) -> None:
    """Raise one ``InvalidWorkflowError`` listing every problem ComfyUI would reject.

    ``uploaded`` are file names this task uploads to ComfyUI's input directory: a
    cached ``/object_info`` cannot list them yet, so they count as valid choices.
    """
    problems = find_problems(graph, object_info, uploaded=uploaded)
    if problems:
        count = f"{len(problems)} problem" + ("s" if len(problems) > 1 else "")
        shown = capped(problems)
        raise InvalidWorkflowError(
            f"workflow does not match this ComfyUI ({count}): "
            + "; ".join(p["message"] if isinstance(p, dict) else p for p in shown),
            problems=shown,
        )


class ObjectInfoCache:
    """ComfyUI's /object_info, fetched once and refreshed when ComfyUI may have changed."""

    def __init__(self, fetch: Callable[[], dict[str, Any]]) -> None:
        self._fetch = fetch
        self._info: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Forget the cache (ComfyUI reconnected: it may have restarted with new models)."""
        self._info = None

    def check(self, graph: Graph, uploaded: Collection[str] = ()) -> None:
        """Preflight ``graph``; on problems refetch once, since models may have been added."""
        try:
            preflight(graph, self._get(), uploaded=uploaded)
        except InvalidWorkflowError:
            self.invalidate()
            preflight(graph, self._get(), uploaded=uploaded)

    def _get(self) -> dict[str, Any]:
        with self._lock:
            if self._info is None:
                self._info = self._fetch()
            return self._info
