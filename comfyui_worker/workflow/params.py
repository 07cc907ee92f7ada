"""Template parameters: their declarations (``_params``), types, and the values a call gives.

A declaration says a parameter's type, default, whether ``-1`` draws a random seed,
and which inputs (``targets``) it writes to; placeholders in the graph declare the
rest implicitly. ``resolve`` checks a caller's values against them and reports
every problem in one error.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from comfyui_worker.bounds import capped
from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.graph import Graph, show_value
from comfyui_worker.workflow.overrides import locate_input
from comfyui_worker.workflow.placeholders import (
    NAME,
    NAME_RE,
    PROMPT_MARKER,
    SEED_MARKER,
    is_link,
    references,
    strings,
)
from comfyui_worker.workflow.suggest import did_you_mean, quote_list

ParamType = Literal["int", "float", "string", "bool", "any", "image"]
PARAM_TYPES: tuple[str, ...] = get_args(ParamType)
RANDOM_SEED = -1
SEED_LIMIT = 2**53
PARAMS_KEY = "_params"
MAX_FIELDS = 50  # a form has no more fields than that worth marking
DECL_KEYS = ("type", "default", "random", "targets", "description", "min", "max", "choices")


@dataclass(frozen=True)
class Target:
    """One graph input a parameter writes to."""

    node_id: str
    input: str

    def __str__(self) -> str:
        return f"{self.node_id}.{self.input}"


@dataclass(frozen=True)
class ParamSpec:
    """A template parameter: its type, default and where it goes in the graph."""

    name: str
    type: ParamType = "any"
    required: bool = True
    default: Any = None
    random: bool = False
    targets: tuple[Target, ...] = ()
    description: str = ""
    declared: bool = True
    minimum: float | None = None  # numbers: the least value ComfyUI's node accepts
    maximum: float | None = None
    choices: tuple[str, ...] = ()  # strings: the only values the node accepts

    def describe(self) -> dict[str, Any]:
        """Summarise as JSON-able data for ``main.py check``, the page and the README."""
        limits = {"min": self.minimum, "max": self.maximum, "choices": list(self.choices)}
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": None if self.required else self.default,
            "random": self.random,
            "description": self.description,
            **{key: value for key, value in limits.items() if value not in (None, [])},
        }

    def check_limits(self, value: Any) -> None:
        """Refuse a value outside the declared range or choices (a ``ValueError`` saying why)."""
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}, got {show_value(value)}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be at most {self.maximum:g}, got {show_value(value)}")
        if self.choices and value not in self.choices:
            raise ValueError(
                f"must be one of {quote_list(self.choices)}, got {show_value(value)}"
                + did_you_mean(str(value), self.choices)
            )

    def takes_image(self, image_names: Collection[str]) -> bool:
        """Whether an input image (bound later by name) stands in for this parameter."""
        return self.name in image_names and (self.type == "image" or not self.declared)


class DeclarationError(Exception):
    """A mistake in one ``_params`` declaration (the caller adds the file name)."""


# --- declarations --------------------------------------------------------------------


def parse_declarations(raw: object, graph: Graph) -> dict[str, ParamSpec]:
    """Validate a template's ``_params`` object against its graph."""
    if not isinstance(raw, dict):
        raise DeclarationError(f"'{PARAMS_KEY}' must be an object of parameter declarations")
    return {str(name): _parse_one(str(name), decl, graph) for name, decl in raw.items()}


def _parse_one(name: str, decl: object, graph: Graph) -> ParamSpec:
    """Validate one parameter declaration."""
    where = f"{PARAMS_KEY}.{name}"
    decl = _declaration(where, name, decl)
    random = _field(decl, "random", bool, False, where, "true or false")
    type_ = _param_type(where, decl.get("type", "int" if random else "any"), random)
    description = _field(decl, "description", str, "", where, "a string")
    required = "default" not in decl and not random
    default = decl.get("default", RANDOM_SEED if random else None)
    targets = _parse_targets(decl.get("targets", []), graph, f"{where}.targets")
    spec = ParamSpec(
        name, type_, required, None, random, targets, description, **_limits(decl, type_, where)
    )
    if not required and default is not None:
        try:
            default = coerce(type_, default)
            if not (random and default == RANDOM_SEED):
                spec.check_limits(default)
        except ValueError as exc:
            raise DeclarationError(f"{where}.default: {exc}") from None
    return dataclasses.replace(spec, default=default)


def _limits(decl: dict[str, Any], type_: str, where: str) -> dict[str, Any]:
    """``min``/``max`` (numbers only) and ``choices`` (strings only) of one declaration."""
    limits: dict[str, Any] = {}
    for key, name in (("min", "minimum"), ("max", "maximum")):
        if key in decl:
            if type_ not in ("int", "float"):
                raise DeclarationError(f"{where}.{key}: only int and float parameters have one")
            value = decl[key]
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise DeclarationError(f"{where}.{key} must be a number")
            limits[name] = value
    if "choices" in decl:
        choices = decl["choices"]
        if type_ != "string":
            raise DeclarationError(f"{where}.choices: only string parameters have them")
        if not (isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices)):
            raise DeclarationError(f"{where}.choices must be a non-empty list of strings")
        limits["choices"] = tuple(choices)
    return limits


def _declaration(where: str, name: str, decl: object) -> dict[str, Any]:
    if not NAME_RE.fullmatch(name):
        raise DeclarationError(f"{where}: parameter names must match {NAME}")
    if not isinstance(decl, dict):
        raise DeclarationError(f'{where} must be an object such as {{"type": "int"}}')
    unknown = sorted(set(decl) - set(DECL_KEYS))
    if unknown:
        hint = " (a parameter is required when it has no default)" if "required" in unknown else ""
        raise DeclarationError(
            f"{where}: unknown key(s) {quote_list(unknown)}; allowed: {quote_list(DECL_KEYS)}"
            + hint
        )
    return decl


def _field(decl: dict[str, Any], key: str, kind: type, default: Any, where: str, want: str) -> Any:
    value = decl.get(key, default)
    if not isinstance(value, kind):
        raise DeclarationError(f"{where}.{key} must be {want}")
    return value


def _param_type(where: str, type_: object, random: bool) -> ParamType:
    if type_ not in PARAM_TYPES:
        hint = did_you_mean(type_, PARAM_TYPES) if isinstance(type_, str) else ""
        raise DeclarationError(
            f"{where}.type {json.dumps(type_)} is not one of {quote_list(PARAM_TYPES)}{hint}"
        )
    if random and type_ != "int":
        raise DeclarationError(f"{where}: 'random' needs type 'int', not '{type_}'")
    return type_  # type: ignore[return-value]  # checked against PARAM_TYPES above


def _parse_targets(raw: object, graph: Graph, where: str) -> tuple[Target, ...]:
    """Each target must name an existing, non-link input of an existing node."""
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise DeclarationError(f'{where} must be a list of "node_id.input_name" strings')
    targets = []
    for item in raw:
        try:
            node_id, input_name = locate_input(graph, item)
        except InvalidWorkflowError as exc:
            raise DeclarationError(f"{where}: {exc.message}") from None
        if is_link(graph[node_id]["inputs"][input_name]):
            raise DeclarationError(f"{where}: '{item}' is a link to another node, not a value")
        targets.append(Target(node_id, input_name))
    return tuple(targets)


def discover(graph: Graph) -> dict[str, ParamSpec]:
    """Parameters implied by placeholders, the first reference deciding (declarations win)."""
    found: dict[str, ParamSpec] = {}
    for text in input_strings(graph):
        for name, marker in references(text):
            if name not in found:
                found[name] = _implied(name, marker)
    return found


def _implied(name: str, marker: str | None) -> ParamSpec:
    if marker == SEED_MARKER:
        return _legacy_seed()
    if marker == PROMPT_MARKER:
        return ParamSpec(name, "string", description="fills PROMPT_PLACEHOLDER", declared=False)
    return ParamSpec(name, description=f"fills {{{{{name}}}}}", declared=False)


def _legacy_seed() -> ParamSpec:
    """``SEED_PLACEHOLDER``: an int seed, drawn at random when omitted or -1."""
    return ParamSpec(
        "seed",
        "int",
        required=False,
        default=RANDOM_SEED,
        random=True,
        description="fills SEED_PLACEHOLDER; -1 or omitted draws a random seed",
        declared=False,
    )


def input_strings(graph: Graph) -> Iterator[str]:
    """Every string in every node's inputs, links excluded."""
    for node in graph.values():
        for value in node["inputs"].values():
            yield from strings(value)


def check_used(declared: Mapping[str, ParamSpec], used: Collection[str]) -> None:
    """Reject declared parameters that reach no input (``used``: placeholders): a typo."""
    for spec in declared.values():
        if not spec.targets and spec.name not in used:
            raise DeclarationError(
                f"{PARAMS_KEY}.{spec.name} is used nowhere: give it 'targets' or put "
                f'"{{{{{spec.name}}}}}" in an input'
            )


# --- values ------------------------------------------------------------------------


def json_type(value: object) -> str:
    """Name a value's type as a caller sending JSON thinks of it."""
    if value is None:
        return "null"
    names = {bool: "bool", int: "int", float: "float", str: "string", list: "array"}
    return names.get(type(value), "object" if isinstance(value, dict) else type(value).__name__)


def coerce(type_: str, value: Any) -> Any:
    """Check ``value`` against a parameter type; ints become floats for float."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "any":
        return value
    if type_ == "int" and is_number and float(value).is_integer():
        return int(value)
    if type_ == "float" and is_number:
        return float(value)
    if type_ == "bool" and isinstance(value, bool):
        return value
    if type_ in ("string", "image") and isinstance(value, str):
        return value
    wanted = "string" if type_ == "image" else type_
    raise ValueError(f"must be {wanted}, got {json_type(value)} {show_value(value)}")


def draw_seed() -> int:
    """Draw a random seed in [0, 2**53): exact in JSON numbers everywhere."""
    return secrets.randbelow(SEED_LIMIT)


@dataclass
class _Resolution:
    """The values found so far and the problems met, for one call."""

    values: dict[str, Any]
    problems: list[str]
    missing: list[ParamSpec]
    fields: dict[str, str]  # parameter name -> its own problem, for a form to show beside it


ImageHint = Callable[[str], str]  # image name -> how this caller gives one


def envelope_hint(name: str) -> str:
    """How a task input gives an image: the envelope's ``images`` list."""
    return f'add {{"name": "{name}", ...}} to \'images\''


def resolve(
    specs: Mapping[str, ParamSpec],
    params: Mapping[str, Any],
    image_names: Collection[str],
    label: str,
    image_hint: ImageHint = envelope_hint,
) -> dict[str, Any]:
    """Check the caller's parameters; return every value the graph will receive.

    ``image_hint`` says how this caller adds a missing image (the envelope, ``--image``,
    the page's file field), so the advice is one the caller can follow.
    """
    known = sorted(specs)
    unknown = [name for name in params if name not in specs]
    found = _Resolution(
        {}, [f"unknown parameter '{n}'{did_you_mean(n, known)}" for n in unknown], [], {}
    )
    for spec in specs.values():
        _resolve_one(spec, params, image_names, found)
    if found.missing:
        names = ", ".join(_missing_text(spec, image_hint) for spec in found.missing)
        found.problems.insert(0, "missing required parameters: " + names)
        found.fields.update((spec.name, "required") for spec in found.missing)
    if found.problems:
        shown = capped(found.problems)
        raise InvalidWorkflowError(
            f"{label}: " + "; ".join(shown),
            problems=shown,
            missing=capped(spec.name for spec in found.missing),
            unknown=capped(unknown),
            known=capped(known),
            fields=dict(list(found.fields.items())[:MAX_FIELDS]),
        )
    return found.values


def _resolve_one(
    spec: ParamSpec, params: Mapping[str, Any], image_names: Collection[str], found: _Resolution
) -> None:
    given = spec.name in params
    if spec.takes_image(image_names):
        if given:
            found.problems.append(f"'{spec.name}' is given both as a parameter and as an image")
            found.fields[spec.name] = "given both as a parameter and as an image"
    elif given:
        try:
            value = coerce(spec.type, params[spec.name])
            if not (spec.random and value == RANDOM_SEED):
                spec.check_limits(value)
            found.values[spec.name] = _seeded(spec, value)
        except ValueError as exc:
            found.problems.append(f"parameter '{spec.name}' {exc}")
            found.fields[spec.name] = str(exc)
    elif spec.required:
        found.missing.append(spec)
    else:
        found.values[spec.name] = _seeded(spec, spec.default)


def _seeded(spec: ParamSpec, value: Any) -> Any:
    """Replace -1 by a fresh random seed for a ``random`` parameter."""
    return draw_seed() if spec.random and value == RANDOM_SEED else value


def _missing_text(spec: ParamSpec, image_hint: ImageHint) -> str:
    """One missing parameter, with what kind of value it wants."""
    if spec.type == "image":
        return f"'{spec.name}' (image: {image_hint(spec.name)})"
    about = f": {spec.description}" if spec.description and spec.declared else ""
    return f"'{spec.name}' ({spec.type}{about})"
