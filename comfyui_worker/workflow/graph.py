"""Validation of ComfyUI API-format graphs, before anything reaches ComfyUI.

ComfyUI answers a malformed ``/prompt`` body with a bare 500 (or a terse 400), so
every shape problem is caught here, once, and reported with the node id and field at
fault. Later stages (rendering, overrides, image binding) keep a valid graph valid.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from comfyui_worker.bounds import capped
from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.placeholders import is_link

Graph = dict[str, dict[str, Any]]

UI_FORMAT_HINT = (
    "this is a ComfyUI UI-format workflow (top-level 'nodes' and 'links' arrays); the "
    "worker needs the API format: in ComfyUI use Workflow > Export (API) (older versions: "
    "enable dev mode in the settings, then 'Save (API Format)')"
)


def fingerprint(graph: object) -> str:
    """sha256 of a graph as canonical JSON: tells whether a prompt id holds *our* graph.

    ComfyUI keeps the graph it was sent with each prompt, in its queue and its history.
    """
    text = json.dumps(graph, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def is_ui_format(obj: object) -> bool:
    """Whether ``obj`` looks like a UI-format export, which ComfyUI's /prompt rejects."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("nodes"), list)
        and isinstance(obj.get("links"), list)
    )


def node_sort_key(node_id: str) -> tuple[int, int, str]:
    """Order node ids numerically when they are ASCII numbers, others after them.

    Compared by length then text, so no id (``"²"``, 5000 digits) is ever converted.
    """
    if node_id.isascii() and node_id.isdigit():
        return (0, len(node_id.lstrip("0")), node_id)
    return (1, 0, node_id)


def sorted_ids(ids: Iterable[str]) -> list[str]:
    """Node ids in natural order."""
    return sorted(ids, key=node_sort_key)


def validate_graph(obj: object, *, source: str = "workflow") -> Graph:
    """Check that ``obj`` is an API-format graph and return it (typed, not copied).

    Every problem found is reported at once (``details["problems"]``) so one fix
    round is enough.
    """
    if is_ui_format(obj):
        raise InvalidWorkflowError(f"{source}: {UI_FORMAT_HINT}", source=source)
    if not isinstance(obj, dict):
        raise InvalidWorkflowError(
            f"{source} must be a JSON object mapping node ids to nodes, got {type(obj).__name__}",
            source=source,
        )
    if not obj:
        raise InvalidWorkflowError(f"{source} has no nodes", source=source)
    problems: list[str] = []
    for node_id, node in obj.items():
        problems.extend(_node_problems(obj, str(node_id), node))
    if problems:
        shown = capped(problems)
        raise InvalidWorkflowError(
            f"{source} is not a valid API-format graph: "
            + "; ".join(shown)
            + _request_body_hint(obj),
            source=source,
            problems=shown,
        )
    return obj


def _node_problems(graph: dict[Any, Any], node_id: str, node: object) -> list[str]:
    """Shape problems of one node: class_type, inputs, _meta and its links."""
    where = f"node '{node_id}'"
    if not isinstance(node, dict):
        return [
            f"{where} must be an object with 'class_type' and 'inputs', got {type(node).__name__}"
        ]
    problems: list[str] = []
    class_type = node.get("class_type")
    if not isinstance(class_type, str) or not class_type.strip():
        problems.append(f"{where}: 'class_type' must be a non-empty string")
    else:
        where = f"node '{node_id}' ({class_type})"
    inputs = node.get("inputs")
    if not isinstance(inputs, dict):
        problems.append(f"{where}: 'inputs' must be an object")
    else:
        for name, value in inputs.items():
            problems.extend(_link_problems(graph, where, str(name), value))
    if "_meta" in node and not isinstance(node["_meta"], dict):
        problems.append(f"{where}: '_meta' must be an object")
    return problems


def _link_problems(graph: dict[Any, Any], where: str, name: str, value: object) -> list[str]:
    """Check that a link points at an existing node and a non-negative output index."""
    if is_link(value):
        target, index = value
        if target not in graph:
            return [f"{where} input '{name}' links to node '{target}', which does not exist"]
        if index < 0:
            return [f"{where} input '{name}' links to output {index} of node '{target}'"]
        return []
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and isinstance(value[1], int)
        and str(value[0]) in graph
    ):
        return [
            f"{where} input '{name}': a link's node id must be a string: "
            f'write ["{value[0]}", {value[1]}]'
        ]
    return []


def _request_body_hint(obj: dict[Any, Any]) -> str:
    """Spot a whole ``/prompt`` request body passed instead of the graph inside it."""
    if isinstance(obj.get("prompt"), dict):
        return " (this looks like a /prompt request body: pass the value of its 'prompt' key)"
    return ""


def show_value(value: object) -> str:
    """Render a value briefly for an error message."""
    text = f"'{value}'" if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
