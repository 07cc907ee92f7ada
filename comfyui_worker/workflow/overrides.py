"""Direct overrides: set any input by ``"node_id.input_name"``, on templates and raw graphs.

Applied after parameters, on the rendered copy. A mistake names the node or input
and suggests close matches; an override may replace a link only with another link
to an existing node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyui_worker.bounds import capped
from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.graph import Graph, show_value, sorted_ids
from comfyui_worker.workflow.placeholders import is_link
from comfyui_worker.workflow.suggest import did_you_mean, quote_list


def locate_input(graph: Graph, key: str) -> tuple[str, str]:
    """Split ``"node_id.input_name"`` at the last dot and check both exist."""
    node_id, dot, input_name = key.rpartition(".")
    if not dot or not node_id or not input_name:
        raise InvalidWorkflowError(
            f'\'{key}\' must have the form "node_id.input_name", e.g. "3.seed"', key=key
        )
    if node_id not in graph:
        ids = sorted_ids(graph)
        raise InvalidWorkflowError(
            f"'{key}': there is no node '{node_id}'{did_you_mean(node_id, ids)}; "
            f"node ids: {quote_list(ids)}",
            key=key,
            node_id=node_id,
            available=capped(ids),
        )
    node = graph[node_id]
    inputs = list(node["inputs"])
    if input_name not in node["inputs"]:
        raise InvalidWorkflowError(
            f"'{key}': node '{node_id}' ({node['class_type']}) has no input "
            f"'{input_name}'{did_you_mean(input_name, inputs)}; its inputs: {quote_list(inputs)}",
            key=key,
            node_id=node_id,
            input=input_name,
            available=capped(inputs),
        )
    return node_id, input_name


def check_overrides(graph: Graph, overrides: Mapping[str, Any]) -> None:
    """Refuse overrides ``apply_overrides`` would refuse, reporting all, changing nothing."""
    problems: list[str] = []
    for key, value in overrides.items():
        try:
            _target(graph, key, value)
        except InvalidWorkflowError as exc:
            problems.append(exc.message)
    if problems:
        shown = capped(problems)
        raise InvalidWorkflowError(
            "bad overrides: " + "; ".join(shown),
            problems=shown,
            overrides=capped(overrides),
        )


def apply_overrides(graph: Graph, overrides: Mapping[str, Any]) -> None:
    """Set ``{"node_id.input_name": value}`` in ``graph`` (a fresh render); report all errors."""
    check_overrides(graph, overrides)
    for key, value in overrides.items():
        node_id, input_name = _target(graph, key, value)
        graph[node_id]["inputs"][input_name] = value


def _target(graph: Graph, key: str, value: Any) -> tuple[str, str]:
    """Where one override goes, refusing to cut a link or to link to a missing node."""
    node_id, input_name = locate_input(graph, key)
    current = graph[node_id]["inputs"][input_name]
    if is_link(current) and not is_link(value):
        raise InvalidWorkflowError(
            f"'{key}' is a link from node '{current[0]}' output {current[1]}; an override may "
            f"only replace it with another link [node_id, output_index], got {show_value(value)}"
        )
    if is_link(value) and value[0] not in graph:
        ids = sorted_ids(graph)
        raise InvalidWorkflowError(
            f"'{key}' links to node '{value[0]}', which does not exist"
            f"{did_you_mean(value[0], ids)}; node ids: {quote_list(ids)}"
        )
    return node_id, input_name
