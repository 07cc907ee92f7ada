"""Workflow templates kept on the worker, and rendering them into a graph.

A template is an API-format graph (one ``*.json`` file, named by its stem) plus an
optional top-level ``"_params"`` object declaring typed parameters (``workflow/params.py``)
and an optional ``"_models"`` list of the model files it needs (``workflow/modeldecl.py``).
Callers then send ``{"template": "name", "params": {...}}`` instead of a whole graph,
and a mistake in a parameter is reported by name instead of surfacing as a ComfyUI
400 or a bad image.

Parameters reach the graph through ``targets`` (``"node_id.input_name"``) or through
placeholders (``workflow/placeholders.py``): an input string exactly ``"{{name}}"`` takes the
value with its type, ``"{{name}}"`` inside a longer string is replaced as text.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyui_worker.bounds import capped
from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow import jsonsafe
from comfyui_worker.workflow.graph import Graph, validate_graph
from comfyui_worker.workflow.modeldecl import MODELS_KEY, ModelDecl, parse_models
from comfyui_worker.workflow.overrides import apply_overrides, check_overrides
from comfyui_worker.workflow.params import (
    PARAMS_KEY,
    DeclarationError,
    ImageHint,
    ParamSpec,
    check_used,
    discover,
    envelope_hint,
    parse_declarations,
    resolve,
)
from comfyui_worker.workflow.placeholders import ImageBinder, fill_text, map_strings
from comfyui_worker.workflow.suggest import did_you_mean, quote_list


@dataclass(frozen=True)
class Template:
    """A validated graph (without ``_params``) and every parameter it accepts."""

    name: str
    graph: Graph
    params: dict[str, ParamSpec]
    source: str = ""
    models: tuple[ModelDecl, ...] = ()  # ``_models``: files it needs in ComfyUI's models/

    @property
    def label(self) -> str:
        """How messages refer to it: a template file, or the task's own workflow."""
        return f"template '{self.name}'" if self.source else "workflow"

    @classmethod
    def from_graph(cls, obj: object, *, name: str = "workflow", source: str = "") -> Template:
        """Build a template from a parsed JSON document, ``_params`` included."""
        where = source or name
        declared_raw: object = {}
        models: tuple[ModelDecl, ...] = ()
        body = obj
        if isinstance(obj, dict) and (PARAMS_KEY in obj or MODELS_KEY in obj):
            declared_raw = obj.get(PARAMS_KEY, {})
            if MODELS_KEY in obj:
                models = parse_models(obj[MODELS_KEY], where=where)
            body = {k: v for k, v in obj.items() if k not in (PARAMS_KEY, MODELS_KEY)}
        graph = validate_graph(body, source=where)
        discovered = discover(graph)
        try:
            declared = parse_declarations(declared_raw, graph)
            check_used(declared, discovered.keys())
        except DeclarationError as exc:
            raise InvalidWorkflowError(f"{where}: {exc}", source=where) from None
        params = {**declared, **{k: v for k, v in discovered.items() if k not in declared}}
        return cls(name=name, graph=graph, params=params, source=source, models=models)

    def describe(self, *, declared_order: bool = False) -> list[dict[str, Any]]:
        """Every parameter as JSON-able dicts: required first by name, or as the file has them.

        The page's form keeps the template's own order (its author's reading order).
        """
        specs = list(self.params.values())
        if not declared_order:
            specs.sort(key=lambda spec: (not spec.required, spec.name))
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
            available=capped(available),
        )


@dataclass(frozen=True)
class Rendered:
    """A graph ready for submission and the parameter values that went into it."""

    graph: Graph
    params: dict[str, Any]


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
        text = path.read_bytes()
    except OSError as exc:
        raise InvalidWorkflowError(
            f"{path.name}: cannot read: {exc.strerror}", file=path.name
        ) from None
    obj = jsonsafe.loads(text, source=path.name)
    return Template.from_graph(obj, name=path.stem, source=path.name)


@dataclass(frozen=True)
class Plan:
    """A template with its parameter values and overrides checked, not yet rendered.

    Checking needs no walk over the graph; ``render`` is the one walk, filling the
    parameters and binding the input images (uploaded in between) together.
    """

    template: Template
    values: dict[str, Any]
    overrides: Mapping[str, Any]
    image_names: Collection[str]

    def render(self, upload_names: Mapping[str, str] | None = None) -> Rendered:
        """A fresh copy of the graph: parameters filled, images bound, overrides applied.

        Without ``upload_names``, image placeholders stay as written.
        """
        bind = ImageBinder(upload_names or {})

        def change(text: str) -> Any:
            return bind(fill_text(text, self.values))

        graph = {
            node_id: {**node, "inputs": map_strings(node["inputs"], change)}
            for node_id, node in self.template.graph.items()
        }
        for spec in self.template.params.values():
            if spec.name in self.values:
                _set_targets(graph, spec, bind(self.values[spec.name]))
            elif spec.takes_image(self.image_names):
                _set_targets(graph, spec, bind(f"{{{{{spec.name}}}}}"))
        if self.overrides:
            apply_overrides(graph, {key: bind(v) for key, v in self.overrides.items()})
        bind.check_all_used()
        return Rendered(graph=graph, params=self.values)


def plan(
    template: Template | Graph,
    params: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    image_names: Collection[str] = frozenset(),
    image_hint: ImageHint = envelope_hint,
) -> Plan:
    """Check parameters and overrides against a template (every mistake named, no walk).

    ``image_names`` are input images, bound when rendering: their ``{{name}}``
    placeholders are not demanded as parameters. ``image_hint`` phrases the advice for
    a missing one in the caller's terms.
    """
    if not isinstance(template, Template):
        template = Template.from_graph(template)
    values = resolve(template.params, params or {}, image_names, template.label, image_hint)
    if overrides:
        check_overrides(template.graph, overrides)
    return Plan(template, values, dict(overrides or {}), image_names)


def render(
    template: Template | Graph,
    params: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    image_names: Collection[str] = frozenset(),
) -> Rendered:
    """Fill a template and apply overrides, on a fresh copy of its graph (images unbound)."""
    return plan(template, params, overrides, image_names=image_names).render()


def _set_targets(graph: Graph, spec: ParamSpec, value: Any) -> None:
    """Write a parameter's value to each of its targets."""
    for target in spec.targets:
        graph[target.node_id]["inputs"][target.input] = value
