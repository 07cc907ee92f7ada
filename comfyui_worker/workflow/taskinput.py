"""The task's single ``workflow`` input: a raw API-format graph or an envelope.

The LittleHorse TaskDef has one JSON_OBJ input. Accepting a bare graph keeps the
simple case simple; the envelope adds templates, parameters, overrides and input
images. Every way the input can be wrong becomes an ``InvalidWorkflowError`` that
names the field.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from comfyui_worker.bounds import capped
from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow import jsonsafe
from comfyui_worker.workflow.graph import UI_FORMAT_HINT, is_ui_format
from comfyui_worker.workflow.modeldecl import MODEL_KEYS, ModelDecl
from comfyui_worker.workflow.suggest import did_you_mean, quote_list

ENVELOPE_KEYS = ("workflow", "template", "params", "overrides", "images", "output", "models")
NESTED_KEYS = {
    "images": ("name", "base64", "path", "url"),
    "output": ("prefix",),
    "models": MODEL_KEYS,
}
PREFIX_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ImageInput(BaseModel):
    """An input image, referenced from the graph by ``name`` or ``"{{name}}"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        max_length=100,
        description='The name the graph uses for this image: an input value "{{name}}" '
        "(or exactly the name) becomes the uploaded file's name.",
    )
    base64: str | None = Field(
        default=None, description="Image bytes in base64, optionally as a data: URL.", min_length=1
    )
    path: str | None = Field(
        default=None,
        description="A file path relative to COMFYUI_INPUT_DIR on the worker.",
        min_length=1,
    )
    url: str | None = Field(
        default=None,
        description="An http(s) URL the worker downloads (needs COMFYUI_ALLOW_INPUT_URLS=true).",
        min_length=1,
    )

    @model_validator(mode="after")
    def _one_source(self) -> ImageInput:
        """Exactly one source, so it is never ambiguous which bytes are used."""
        given = [key for key in ("base64", "path", "url") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                f"image '{self.name}' needs exactly one of 'base64', 'path' or 'url', "
                f"got {quote_list(given) if given else 'none'}"
            )
        return self

    @property
    def source(self) -> str:
        """Which kind of source this image has: base64, path or url."""
        return "base64" if self.base64 is not None else "path" if self.path is not None else "url"


class OutputOptions(BaseModel):
    """Where this task's files go, within the worker's output location."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(
        min_length=1,
        max_length=200,
        description="A relative path the task's run folder goes under, e.g. "
        '"conversations/c42/images": files land in <prefix>/<wf_run_id>/<task_guid>/. '
        "Segments of letters, digits, '.', '_' and '-'; no absolute paths, no '..'.",
    )

    @field_validator("prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        """Only plain relative segments, so a prefix can never leave the output location."""
        parts = value.split("/")
        bad = [part for part in parts if not PREFIX_PART.fullmatch(part) or part in (".", "..")]
        if value.startswith("/") or bad:
            raise ValueError(
                f"{value[:80]!r} must be a relative path of plain segments "
                "(letters, digits, '.', '_', '-'; no leading '/', no '..')"
            )
        return value


class TaskInput(BaseModel):
    """A workflow to run: a graph or a template, with parameters, overrides and images.

    The task input may also be a bare API-format graph, which means ``{"workflow": graph}``.
    """

    model_config = ConfigDict(
        extra="forbid",
        title="ComfyUI workflow task input",
        json_schema_extra={
            "examples": [
                {
                    "template": "txt2img_sdxl",
                    "params": {"prompt": "a lighthouse at dusk", "seed": -1},
                    "overrides": {"3.steps": 30},
                },
                {
                    "template": "image_resize",
                    "params": {"width": 512, "height": 512},
                    "images": [{"name": "image", "path": "in/photo.png"}],
                },
            ]
        },
    )

    workflow: dict[str, Any] | None = Field(
        default=None,
        description="An API-format graph (ComfyUI: Workflow > Export (API)). "
        "Exactly one of workflow and template.",
    )
    template: str | None = Field(
        default=None,
        min_length=1,
        description="The name of a template on the worker (a file in COMFYUI_WORKFLOWS_DIR, "
        "without .json). Exactly one of workflow and template.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Template parameters by name; also fills {{name}} placeholders in a graph.",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='Input values to set, keyed "node_id.input_name", e.g. {"3.seed": 42}; '
        "applied after params.",
    )
    output: OutputOptions | None = Field(
        default=None, description="Where the task's files go (see OutputOptions)."
    )
    images: list[ImageInput] = Field(
        default_factory=list, description="Input images uploaded to ComfyUI before the run."
    )
    models: list[ModelDecl] = Field(
        default_factory=list,
        description="Model files the workflow needs, added to its template's _models: the "
        "worker downloads those its ComfyUI lacks into COMFYUI_MODELS_DIR before the run.",
    )

    @model_validator(mode="after")
    def _check(self) -> TaskInput:
        """Exactly one graph source, and image names that identify one image each."""
        if (self.workflow is None) == (self.template is None):
            given = "both" if self.workflow is not None else "neither"
            raise ValueError(f"give exactly one of 'workflow' and 'template', got {given}")
        names = [image.name for image in self.images]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"image names must be unique: {quote_list(duplicates)} repeated")
        return self

    @property
    def image_names(self) -> set[str]:
        """The names the graph may use to refer to input images."""
        return {image.name for image in self.images}


def _is_envelope(obj: dict[Any, Any]) -> bool:
    """Tell an envelope from a graph: it has workflow/template keys that are not nodes."""
    keys = [key for key in ("workflow", "template") if key in obj]
    return bool(keys) and not any(
        isinstance(obj[key], dict) and "class_type" in obj[key] for key in keys
    )


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``("images", 0, "base64")`` becomes ``images[0].base64``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _describe(item: Any) -> str:
    """One pydantic error as ``field: message``, unknown keys with a suggestion."""
    loc = tuple(item["loc"])
    if item["type"] == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        allowed = ENVELOPE_KEYS if not parent else NESTED_KEYS.get(str(parent[0]), ())
        where = f" in {_field_path(parent)}" if parent else ""
        return (
            f"unknown key '{key}'{where}{did_you_mean(key, allowed)}; "
            f"allowed keys: {quote_list(allowed)}"
        )
    message = str(item["msg"]).removeprefix("Value error, ")
    path = _field_path(loc)
    return f"{path}: {message}" if path else message


def parse_task_input(obj: object) -> TaskInput:
    """Interpret the task's ``workflow`` input as an envelope or a bare graph."""
    jsonsafe.check(obj, source="workflow")
    if is_ui_format(obj):
        raise InvalidWorkflowError(f"workflow: {UI_FORMAT_HINT}")
    if not isinstance(obj, dict):
        raise InvalidWorkflowError(
            "the task input must be a JSON object: an API-format graph or "
            f'{{"workflow": ...}} / {{"template": ...}}, got {type(obj).__name__}'
        )
    if not _is_envelope(obj):
        return TaskInput(workflow=obj)
    if is_ui_format(obj.get("workflow")):
        raise InvalidWorkflowError(f"workflow: {UI_FORMAT_HINT}", field="workflow")
    try:
        return TaskInput.model_validate(obj)
    except ValidationError as exc:
        errors = capped(_describe(item) for item in exc.errors())
        raise InvalidWorkflowError(
            "invalid task input: " + "; ".join(errors), errors=errors
        ) from None


def task_input_json_schema() -> dict[str, Any]:
    """Return the envelope's JSON Schema (a bare graph is accepted too), for the README."""
    return TaskInput.model_json_schema()
