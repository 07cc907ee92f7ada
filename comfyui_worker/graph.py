"""Validation of ComfyUI API-format graphs, before anything reaches ComfyUI.

ComfyUI answers a malformed ``/prompt`` body with a bare 500 (or a terse 400), so
every shape problem is caught here and reported with the node id and field at fault.
The small helpers (``is_link``, ``close_matches``, ``did_you_mean``) are shared by
the template, image and preflight modules.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterable
from typing import Any, TypeGuard

from comfyui_worker.errors import InvalidWorkflowError

Graph = dict[str, dict[str, Any]]

UI_FORMAT_HINT = (
    "this is a ComfyUI UI-format workflow (top-level 'nodes' and 'links' arrays); the "
    "worker needs the API format: in ComfyUI use Workflow > Export (API) (older versions: "
    "enable dev mode in the settings, then 'Save (API Format)')"
)


def is_ui_format(obj: object) -> bool:
    """Whether ``obj`` looks like a UI-format export, which ComfyUI's /prompt rejects."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("nodes"), list)
        and isinstance(obj.get("links"), list)
    )


def is_link(value: object) -> TypeGuard[list[Any]]:
    """Whether an input value is a link ``[node_id, output_index]`` (ComfyUI's own test)."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def node_sort_key(node_id: str) -> tuple[int, int, str]:
    """Order node ids numerically when they are numbers, so messages read naturally."""
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def sorted_ids(ids: Iterable[str]) -> list[str]:
    """Node ids in natural order."""
    return sorted(ids, key=node_sort_key)


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Case-insensitive difflib matches, returned in their original spelling."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[match] for match in found]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"``, or an empty string when nothing is close."""
    matches = close_matches(word, choices)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(f"'{m}'" for m in matches) + "?)"


def quote_list(items: Iterable[object], limit: int = 0) -> str:
    """Format ``'a', 'b', 'c'`` with an optional cap, for readable error messages."""
    values = list(items)
    shown = values[:limit] if limit else values
    text = ", ".join(f"'{item}'" for item in shown)
    if limit and len(values) > limit:
        text += f", ... ({len(values) - limit} more)"
    return text or "(none)"


def validate_graph(obj: object, *, source: str = "workflow") -> Graph:
    """Check that ``obj`` is an API-format graph; return a deep copy of it.

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
        hint = _request_body_hint(obj)
        raise InvalidWorkflowError(
            f"{source} is not a valid API-format graph: " + "; ".join(problems) + hint,
            source=source,
            problems=problems,
        )
    return copy.deepcopy(obj)


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
