"""Workflow templates kept on the worker, their parameters, and rendering.

A template is an API-format graph (one ``*.json`` file, named by its stem) plus an
optional top-level ``"_params"`` object declaring typed parameters. Callers then send
``{"template": "name", "params": {...}}`` instead of a whole graph, and a mistake in
a parameter is reported by name instead of surfacing as a ComfyUI 400 or a bad image.

Parameters reach the graph through ``targets`` (``"node_id.input_name"``) or through
placeholders: an input string exactly ``"{{name}}"`` takes the value with its type,
``"{{name}}"`` inside a longer string is replaced as text. The legacy markers
``PROMPT_PLACEHOLDER`` and ``SEED_PLACEHOLDER`` stand for ``prompt`` and ``seed``.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.graph import (
    Graph,
    did_you_mean,
    is_link,
    quote_list,
    show_value,
    validate_graph,
)
from comfyui_worker.overrides import apply_overrides, locate_input

ParamType = Literal["int", "float", "string", "bool", "any", "image"]
PARAM_TYPES: tuple[str, ...] = get_args(ParamType)
RANDOM_SEED = -1
SEED_LIMIT = 2**53
PROMPT_PLACEHOLDER = "PROMPT_PLACEHOLDER"
SEED_PLACEHOLDER = "SEED_PLACEHOLDER"
PARAMS_KEY = "_params"

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
PARAM_NAME = re.compile(_NAME)
PLACEHOLDER = re.compile(r"\{\{\s*(" + _NAME + r")\s*\}\}")
_TEXT_SLOT = re.compile(PLACEHOLDER.pattern + "|" + PROMPT_PLACEHOLDER)
_DECL_KEYS = ("type", "default", "random", "targets", "description")


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

    def describe(self) -> dict[str, Any]:
        """Summarise as JSON-able data for ``main.py check`` and the README."""
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": None if self.required else self.default,
            "random": self.random,
            "description": self.description,
        }


@dataclass(frozen=True)
class Template:
    """A validated graph (without ``_params``) and every parameter it accepts."""

    name: str
    graph: Graph
    params: dict[str, ParamSpec]
    source: str = ""

    @property
    def label(self) -> str:
        """How messages refer to it: a template file, or the task's own workflow."""
        return f"template '{self.name}'" if self.source else "workflow"

    @classmethod
    def from_graph(cls, obj: object, *, name: str = "workflow", source: str = "") -> Template:
        """Build a template from a parsed JSON document, ``_params`` included."""
        where = source or name
        declared_raw: object = {}
        body = obj
        if isinstance(obj, dict) and PARAMS_KEY in obj:
            declared_raw = obj[PARAMS_KEY]
            body = {key: value for key, value in obj.items() if key != PARAMS_KEY}
        graph = validate_graph(body, source=where)
        declared = _parse_params(declared_raw, graph, where)
        discovered = _discover(graph)
        params = {**declared, **{k: v for k, v in discovered.items() if k not in declared}}
        _check_used(declared, graph, where)
        return cls(name=name, graph=graph, params=params, source=source)

    def describe(self) -> list[dict[str, Any]]:
        """Every parameter, required ones first, as JSON-able dicts."""
        specs = sorted(self.params.values(), key=lambda spec: (not spec.required, spec.name))
        return [spec.describe() for spec in specs]


@dataclass(frozen=True)
class TemplateSet:
    """The templates found in a directory, and the files that failed to load."""

    directory: Path
    templates: dict[str, Template] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Template names, sorted."""
        return sorted(self.templates)

    def __contains__(self, name: object) -> bool:
        return name in self.templates

    def __len__(self) -> int:
        return len(self.templates)

    def get(self, name: str) -> Template:
        """Return the named template, or raise an error that helps pick the right name."""
        template = self.templates.get(name)
        if template is not None:
            return template
        broken = self.errors.get(f"{name}.json")
        if broken is not None:
            raise InvalidWorkflowError(
                f"template '{name}' failed to load: {broken}", template=name, reason=broken
            )
        available = self.names()
        where = f"in {self.directory}"
        if not self.directory.is_dir():
            where = f"({self.directory} does not exist; set COMFYUI_WORKFLOWS_DIR)"
        raise InvalidWorkflowError(
            f"unknown template '{name}'{did_you_mean(name, available)}; "
            f"available templates {where}: {quote_list(available)}",
            template=name,
            available=available,
        )


@dataclass(frozen=True)
class Rendered:
    """A graph ready for submission and the parameter values that went into it."""

    graph: Graph
    params: dict[str, Any]


# --- loading -----------------------------------------------------------------------


def load_templates(directory: Path) -> TemplateSet:
    """Load every ``*.json`` in ``directory``; a broken file is recorded, never raised."""
    templates: dict[str, Template] = {}
    errors: dict[str, str] = {}
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    for path in paths:
        if path.name.startswith("."):
            continue
        try:
            templates[path.stem] = load_template(path)
        except InvalidWorkflowError as exc:
            errors[path.name] = exc.message
    return TemplateSet(directory=directory, templates=templates, errors=errors)


def load_template(path: Path) -> Template:
    """Read and validate one template file; errors name the file."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidWorkflowError(f"{path.name}: cannot read: {exc}", file=path.name) from None
    except json.JSONDecodeError as exc:
        raise InvalidWorkflowError(
            f"{path.name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            file=path.name,
        ) from None
    return Template.from_graph(obj, name=path.stem, source=path.name)


def _fail(message: str, source: str, **details: Any) -> InvalidWorkflowError:
    """Build an error for a template author, naming the file."""
    return InvalidWorkflowError(f"{source}: {message}", source=source, **details)


def _parse_params(raw: object, graph: Graph, source: str) -> dict[str, ParamSpec]:
    """Validate the ``_params`` object of a template."""
    if not isinstance(raw, dict):
        raise _fail(f"'{PARAMS_KEY}' must be an object of parameter declarations", source)
    return {str(name): _parse_param(str(name), decl, graph, source) for name, decl in raw.items()}


def _parse_param(name: str, decl: object, graph: Graph, source: str) -> ParamSpec:
    """Validate one parameter declaration against the graph it belongs to."""
    where = f"{PARAMS_KEY}.{name}"
    if not PARAM_NAME.fullmatch(name):
        raise _fail(f"{where}: parameter names must match {_NAME}", source)
    if not isinstance(decl, dict):
        raise _fail(f'{where} must be an object such as {{"type": "int"}}', source)
    unknown = sorted(set(decl) - set(_DECL_KEYS))
    if unknown:
        hint = " (a parameter is required when it has no default)" if "required" in unknown else ""
        raise _fail(
            f"{where}: unknown key(s) {quote_list(unknown)}; allowed: {quote_list(_DECL_KEYS)}"
            + hint,
            source,
        )
    random = decl.get("random", False)
    if not isinstance(random, bool):
        raise _fail(f"{where}.random must be true or false", source)
    type_ = decl.get("type", "int" if random else "any")
    if type_ not in PARAM_TYPES:
        raise _fail(
            f"{where}.type {json.dumps(type_)} is not one of {quote_list(PARAM_TYPES)}"
            + (did_you_mean(type_, PARAM_TYPES) if isinstance(type_, str) else ""),
            source,
        )
    if random and type_ != "int":
        raise _fail(f"{where}: 'random' needs type 'int', not '{type_}'", source)
    description = decl.get("description", "")
    if not isinstance(description, str):
        raise _fail(f"{where}.description must be a string", source)
    required = "default" not in decl and not random
    default = decl.get("default", RANDOM_SEED if random else None)
    if not required and default is not None:
        try:
            default = coerce(type_, default)
        except ValueError as exc:
            raise _fail(f"{where}.default: {exc}", source) from None
    return ParamSpec(
        name=name,
        type=type_,
        required=required,
        default=default,
        random=random,
        targets=_parse_targets(decl.get("targets", []), graph, f"{where}.targets", source),
        description=description,
    )


def _parse_targets(raw: object, graph: Graph, where: str, source: str) -> tuple[Target, ...]:
    """Each target must name an existing, non-link input of an existing node."""
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise _fail(f'{where} must be a list of "node_id.input_name" strings', source)
    targets = []
    for item in raw:
        try:
            node_id, input_name = locate_input(graph, item)
        except InvalidWorkflowError as exc:
            raise _fail(f"{where}: {exc.message}", source) from None
        if is_link(graph[node_id]["inputs"][input_name]):
            raise _fail(f"{where}: '{item}' is a link to another node, not a value", source)
        targets.append(Target(node_id, input_name))
    return tuple(targets)


def _check_used(declared: Mapping[str, ParamSpec], graph: Graph, source: str) -> None:
    """Reject declared parameters that reach no input: almost certainly a typo."""
    used = set(_placeholder_names(graph))
    for spec in declared.values():
        if not spec.targets and spec.name not in used:
            raise _fail(
                f"{PARAMS_KEY}.{spec.name} is used nowhere: give it 'targets' or put "
                f'"{{{{{spec.name}}}}}" in an input',
                source,
            )


# --- placeholders ------------------------------------------------------------------


def _strings(value: object) -> Iterator[str]:
    """Every string inside an input value, links excluded."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list) and not is_link(value):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _input_strings(graph: Graph) -> Iterator[str]:
    """Every string in every node's inputs."""
    for node in graph.values():
        for value in node["inputs"].values():
            yield from _strings(value)


def _placeholder_names(graph: Graph) -> Iterator[str]:
    """Parameter names referenced by placeholders, legacy markers included."""
    for text in _input_strings(graph):
        yield from PLACEHOLDER.findall(text)
        if text == SEED_PLACEHOLDER:
            yield "seed"
        if PROMPT_PLACEHOLDER in text:
            yield "prompt"


def _discover(graph: Graph) -> dict[str, ParamSpec]:
    """Parameters implied by placeholders (declarations, merged later, win)."""
    found: dict[str, ParamSpec] = {}
    for text in _input_strings(graph):
        for name in PLACEHOLDER.findall(text):
            found.setdefault(
                name, ParamSpec(name, description=f"fills {{{{{name}}}}}", declared=False)
            )
        if text == SEED_PLACEHOLDER:
            found.setdefault("seed", _legacy_seed())
        if PROMPT_PLACEHOLDER in text:
            found.setdefault(
                "prompt",
                ParamSpec(
                    "prompt", "string", description="fills PROMPT_PLACEHOLDER", declared=False
                ),
            )
    return found


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


def _as_text(value: Any) -> str:
    """How a value reads inside a longer string: strings as-is, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _fill_text(text: str, values: Mapping[str, Any]) -> Any:
    """Substitute placeholders in one string; an exact placeholder keeps the type."""
    exact = PLACEHOLDER.fullmatch(text)
    if exact:
        name = exact[1]
        return copy.deepcopy(values[name]) if name in values else text
    if text == SEED_PLACEHOLDER:
        return values.get("seed", text)
    if text == PROMPT_PLACEHOLDER:
        return values.get("prompt", text)

    def replace(match: re.Match[str]) -> str:
        name = match[1] or "prompt"
        return _as_text(values[name]) if name in values else match[0]

    return _TEXT_SLOT.sub(replace, text)


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    """Substitute placeholders anywhere inside an input value (links untouched)."""
    if isinstance(value, str):
        return _fill_text(value, values)
    if is_link(value):
        return list(value)
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    return copy.deepcopy(value)


# --- parameter values --------------------------------------------------------------


def json_type(value: object) -> str:
    """Name a value's type as a caller sending JSON thinks of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def coerce(type_: str, value: Any) -> Any:
    """Check ``value`` against a parameter type; ints become floats for float."""
    if type_ == "any":
        return value
    if type_ == "int" and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if type_ == "float" and isinstance(value, int | float) and not isinstance(value, bool):
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


def _seeded(spec: ParamSpec, value: Any) -> Any:
    """Replace -1 by a fresh random seed for a ``random`` parameter."""
    return draw_seed() if spec.random and value == RANDOM_SEED else value


def _takes_image(spec: ParamSpec, image_names: Collection[str]) -> bool:
    """Whether an input image (bound later by name) stands in for this parameter."""
    return spec.name in image_names and (spec.type == "image" or not spec.declared)


def _missing_text(spec: ParamSpec) -> str:
    """One missing parameter, with what kind of value it wants."""
    if spec.type == "image":
        return f"'{spec.name}' (image: add {{\"name\": \"{spec.name}\", ...}} to 'images')"
    about = f": {spec.description}" if spec.description and spec.declared else ""
    return f"'{spec.name}' ({spec.type}{about})"


def _resolve(
    template: Template, params: Mapping[str, Any], image_names: Collection[str]
) -> dict[str, Any]:
    """Check the caller's parameters; return every value the graph will receive."""
    known = sorted(template.params)
    problems: list[str] = []
    unknown = [name for name in params if name not in template.params]
    for name in unknown:
        problems.append(f"unknown parameter '{name}'{did_you_mean(name, known)}")
    missing: list[ParamSpec] = []
    values: dict[str, Any] = {}
    for name, spec in template.params.items():
        if _takes_image(spec, image_names):
            if name in params:
                problems.append(f"'{name}' is given both as a parameter and as an image")
        elif name in params:
            try:
                values[name] = _seeded(spec, coerce(spec.type, params[name]))
            except ValueError as exc:
                problems.append(f"parameter '{name}' {exc}")
        elif spec.required:
            missing.append(spec)
        else:
            values[name] = _seeded(spec, spec.default)
    if missing:
        problems.insert(0, "missing required parameters: " + ", ".join(map(_missing_text, missing)))
    if problems:
        raise InvalidWorkflowError(
            f"{template.label}: " + "; ".join(problems),
            template=template.name,
            problems=problems,
            missing=[spec.name for spec in missing],
            unknown=unknown,
            known=known,
        )
    return values


# --- rendering ---------------------------------------------------------------------


def render(
    template: Template | Graph,
    params: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    image_names: Collection[str] = frozenset(),
) -> Rendered:
    """Fill a template (or a raw graph with placeholders) and apply overrides.

    ``image_names`` are input images bound later by ``images.bind_images``: their
    ``{{name}}`` placeholders are left in place rather than demanded as parameters.
    The template's own graph is never modified.
    """
    if not isinstance(template, Template):
        template = Template.from_graph(template)
    values = _resolve(template, params or {}, image_names)
    graph = copy.deepcopy(template.graph)
    for node in graph.values():
        node["inputs"] = _fill(node["inputs"], values)
    for spec in template.params.values():
        if spec.name in values:
            _set_targets(graph, spec, values[spec.name])
        elif _takes_image(spec, image_names):
            _set_targets(graph, spec, f"{{{{{spec.name}}}}}")
    if overrides:
        graph = apply_overrides(graph, overrides)
    return Rendered(graph=graph, params=values)


def _set_targets(graph: Graph, spec: ParamSpec, value: Any) -> None:
    """Write a parameter's value to each of its targets (a copy each time)."""
    for target in spec.targets:
        graph[target.node_id]["inputs"][target.input] = copy.deepcopy(value)
