"""Checking a submitted graph the way POST /prompt is seen to: its 400 answers and their shapes.

Unknown node types stop everything at once; otherwise every output node is checked with
all it depends on, and problems are listed per node (``node_errors``) with the outputs they
spoil. Shapes: ``tests/fixtures/comfyui/post_prompt_*.json`` and docs/comfyui-api.md.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_CONVERT: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str}
_CONVERT["BOOLEAN"] = bool
MESSAGES = {
    "required_input_missing": "Required input is missing",
    "bad_linked_input": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
    "exception_during_validation": "Exception when validating node",
    "return_type_mismatch": "Return type mismatch between linked nodes",
    "value_not_in_list": "Value not in list",
    "custom_validation_failed": "Custom validation failed for node",
    "prompt_no_outputs": "Prompt has no outputs",
    "prompt_outputs_failed_validation": "Prompt outputs failed validation",
}


class NotAGraph(Exception):
    """The prompt is not a mapping of node ids to nodes."""


@dataclass
class Verdict:
    """The outcome: ``error`` is None when the prompt can be queued (with ``outputs``)."""

    error: dict[str, Any] | None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


def problem(kind: str, details: str, message: str = "", **extra: Any) -> dict[str, Any]:
    """One error object, ``{type, message, details, extra_info}``."""
    message = message or MESSAGES[kind]
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def is_link(value: Any) -> bool:
    """A ``[node_id, output_index]`` input."""
    if not isinstance(value, list) or len(value) != 2:
        return False
    return isinstance(value[0], str) and isinstance(value[1], int)


def _types_fit(given: Any, wanted: Any) -> bool:
    """Same type, a wildcard on either side, or comma-separated type lists that overlap."""
    if given == wanted or "*" in (given, wanted):
        return True
    if not isinstance(given, str) or not isinstance(wanted, str):
        return False
    return bool({t.strip() for t in given.split(",")} & {t.strip() for t in wanted.split(",")})


def _unknown_node(node_id: str, node: dict[str, Any], newer: bool) -> dict[str, Any]:
    class_type, title = node.get("class_type"), (node.get("_meta") or {}).get("title")
    where, known = f"Node ID '#{node_id}'", "class_type" in node
    if not newer:
        missing = "a node is missing the class_type property"
        what = f"node {class_type} does not exist" if known else missing
        return problem("invalid_prompt", where, f"Cannot execute because {what}.")
    if known:
        title = title or class_type
        message = f"Node '{title}' not found. The custom node may not be installed."
    else:
        message = f"Node '{title or f'ID #{node_id}'}' has no class_type. "
        message += "The workflow may be corrupted or a custom node is missing."
    about = {"node_id": node_id, "class_type": class_type, "node_title": title}
    return problem("missing_node_type", where, message, **about)


def _about(name: str, config: list[Any]) -> dict[str, Any]:
    return {"input_name": name, "input_config": config}


def _crash(exception_type: str) -> dict[str, Any]:
    return {"exception_type": exception_type, "traceback": []}


class _Checker:
    def __init__(self, graph: dict[str, Any], info: dict[str, Any], newer: bool, exists: Any):
        self.graph, self.info, self.newer, self.exists = graph, info, newer, exists
        self.found: dict[str, list[dict[str, Any]]] = {}

    def upstream(self, node_id: str) -> list[str]:
        """``node_id`` and every node it depends on through links, each once."""
        seen, stack = [], [node_id]
        while stack:
            current = stack.pop()
            if current not in seen and current in self.graph:
                seen.append(current)
                inputs = list(self.graph[current].get("inputs", {}).values())
                stack.extend(value[0] for value in reversed(inputs) if is_link(value))
        return seen

    def problems(self, node_id: str) -> list[dict[str, Any]]:
        """The node's own problems, in input order (computed once)."""
        if node_id not in self.found:
            node = self.graph[node_id]
            inputs, found = node.setdefault("inputs", {}), self.found.setdefault(node_id, [])
            declared = self.info[node["class_type"]]["input"]
            for section in ("required", "optional"):
                for name, spec in declared.get(section, {}).items():
                    config = [spec[0], spec[1] if len(spec) > 1 else {}]
                    if name not in inputs:
                        if section == "required":
                            found.append(problem("required_input_missing", name, input_name=name))
                        continue
                    check = self._link if isinstance(inputs[name], list) else self._value
                    if issue := check(node["class_type"], inputs, name, config):
                        found.append(issue)
        return self.found[node_id]

    def _link(self, class_type: str, inputs: dict[str, Any], name: str, config: list[Any]) -> Any:
        link, about = inputs[name], _about(name, config)
        if len(link) != 2:
            return problem("bad_linked_input", name, **about, received_value=link)
        source, slot = link
        if source not in self.graph:  # ComfyUI trips on a KeyError here
            return problem("exception_during_validation", repr(source), **_crash("KeyError"))
        outputs = self.info[self.graph[source]["class_type"]]["output"]
        if not isinstance(slot, int) or not 0 <= slot < len(outputs):
            details = "tuple index out of range"
            return problem("exception_during_validation", details, **_crash("IndexError"))
        if _types_fit(outputs[slot], config[0]):
            return None
        details = f"{name}, received_type({outputs[slot]}) mismatch input_type({config[0]})"
        about |= {"received_type": outputs[slot], "linked_node": link}
        return problem("return_type_mismatch", details, **about)

    def _value(self, class_type: str, inputs: dict[str, Any], name: str, config: list[Any]) -> Any:
        (kind, options), about = config, _about(name, config)
        if isinstance(inputs[name], dict) and "__value__" in inputs[name]:
            inputs[name] = inputs[name]["__value__"]
        value = inputs[name]
        if isinstance(kind, str) and kind in _CONVERT:
            try:
                value = inputs[name] = _CONVERT[kind](value)  # queued converted
            except (TypeError, ValueError) as exc:
                message = f"Failed to convert an input value to a {kind} value"
                about |= {"received_value": value, "exception_message": str(exc)}
                return problem("invalid_input_type", f"{name}, {value}, {exc}", message, **about)
        if class_type == "LoadImage" and name == "image":  # the node checks its file itself
            if isinstance(value, str) and not self.exists(value):
                details = f"image - Invalid image file: {value}"
                return problem("custom_validation_failed", details, input_name=name)
            return None
        about["received_value"] = value
        for bound, word, beyond in (
            ("min", "smaller", operator.lt),
            ("max", "bigger", operator.gt),
        ):
            if bound in options and beyond(value, options[bound]):
                message = f"Value {value} {word} than {bound} of {options[bound]}"
                return problem(f"value_{word}_than_{bound}", name, message, **about)
        choices = kind if isinstance(kind, list) else None
        if kind == "COMBO" and self.newer:  # only the 2026 releases check newer-style combos
            choices = options.get("options", [])
        if choices is None or value in choices:
            return None
        shown = f"(list of length {len(choices)})" if len(choices) > 20 else str(choices)
        about["input_config"] = None if len(choices) > 20 else config
        return problem("value_not_in_list", f"{name}: {value!r} not in {shown}", **about)


def check_prompt(
    graph: Any,
    info: dict[str, Any],
    *,
    targets: list[str] | None = None,
    newer: bool = False,
    exists: Callable[[str], bool] = lambda name: False,
) -> Verdict:
    """Check ``graph`` against /object_info ``info``; ``exists`` tells if an input file exists."""
    if not isinstance(graph, dict) or not all(isinstance(node, dict) for node in graph.values()):
        raise NotAGraph
    for node_id, node in graph.items():
        if node.get("class_type") not in info:
            return Verdict(_unknown_node(node_id, node, newer))
    wanted = [n for n in graph if targets is None or n in targets]
    outputs = [n for n in wanted if info[graph[n]["class_type"]]["output_node"]]
    if not outputs:
        return Verdict(problem("prompt_no_outputs", ""))
    checker = _Checker(graph, info, newer, exists)
    good: list[str] = []
    failed: list[dict[str, Any]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        spoilers = [n for n in checker.upstream(output) if checker.problems(n)]
        good += [] if spoilers else [output]
        failed += checker.problems(output)
        for node_id in spoilers:
            entry = {"errors": checker.problems(node_id), "dependent_outputs": []}
            entry["class_type"] = graph[node_id]["class_type"]
            node_errors.setdefault(node_id, entry)["dependent_outputs"].append(output)
    if good:
        return Verdict(None, good, node_errors)
    details = "\n".join(f"{p['message']}: {p['details']}" for p in failed)
    return Verdict(problem("prompt_outputs_failed_validation", details), [], node_errors)
