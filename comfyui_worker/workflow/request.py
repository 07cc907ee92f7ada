"""From task input to a ``RunRequest``: envelope, template, params, images, in one place.

The LittleHorse handler and ``main.py run`` both build their requests here, so both
accept the same input and validate it the same way, once. Blocking (an image may be
fetched from a URL): call it from the execution thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import structlog

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.settings import ComfySettings
from comfyui_worker.workflow import jsonsafe
from comfyui_worker.workflow.graph import Graph, fingerprint
from comfyui_worker.workflow.images import ResolvedImage, resolve_images
from comfyui_worker.workflow.modeldecl import ModelDecl, merge_models
from comfyui_worker.workflow.params import ImageHint, envelope_hint
from comfyui_worker.workflow.suggest import did_you_mean, quote_list
from comfyui_worker.workflow.taskinput import TaskInput, parse_task_input
from comfyui_worker.workflow.templates import Template, TemplateSet, load_templates, plan
from comfyui_worker.workflow.urlfetch import Fetcher

log = structlog.get_logger("comfyui_worker.workflow.request")


@dataclass(frozen=True)
class RunRequest:
    """One workflow execution: a validated graph, its prompt id, where files go."""

    graph: Graph
    prompt_id: str
    run_key: str
    fresh: bool = False  # no earlier delivery can have queued it (first attempt, new id)
    uploads: Sequence[ResolvedImage] = ()
    params: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)  # as given, to be recorded
    template: str | None = None
    models: tuple[ModelDecl, ...] = ()  # the template's and the task's, ensured before submit

    @cached_property
    def graph_sha256(self) -> str:
        """The graph's fingerprint: recorded with the submission, checked in ComfyUI's history."""
        return fingerprint(self.graph)


@dataclass(frozen=True)
class Identity:
    """Who a request is for: its prompt id (which also names its input images), its run key."""

    prompt_id: str
    run_key: str
    fresh: bool = False


class TaskPreparer:
    """Holds the worker's templates (loaded once) and turns task inputs into requests."""

    def __init__(
        self,
        settings: ComfySettings,
        templates: TemplateSet | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher or Fetcher(settings)
        self.templates = templates or load_templates(settings.workflows_dir)
        for file, reason in self.templates.errors.items():
            log.error("templates.broken", file=file, reason=reason)
        log.info(
            "templates.loaded", directory=str(settings.workflows_dir), names=self.templates.names()
        )

    def request(
        self,
        obj: object,
        identity: Identity,
        *,
        params: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
        image_hint: ImageHint = envelope_hint,
    ) -> RunRequest:
        """Parse the input, check its parameters, fetch its images, render (one walk)."""
        task = parse_task_input(obj)
        template = template_for(task, self.templates)
        planned = plan(
            template,
            {**task.params, **(params or {})},
            {**task.overrides, **(overrides or {})},
            image_names=task.image_names,
            image_hint=image_hint,
        )
        images = resolve_images(
            task.images,
            self.settings,
            unique_prefix=identity.prompt_id,  # one attempt's inputs, never another's
            fetcher=self.fetcher,
        )
        rendered = planned.render({image.name: image.upload_name for image in images})
        prefix = task.output.prefix if task.output is not None else None
        return RunRequest(
            graph=rendered.graph,
            prompt_id=identity.prompt_id,
            run_key=f"{prefix}/{identity.run_key}" if prefix else identity.run_key,
            fresh=identity.fresh,
            uploads=images,
            params=rendered.params,
            overrides=dict(planned.overrides),
            template=task.template,
            models=merge_models(template.models, task.models),
        )


def template_for(task: TaskInput, templates: TemplateSet) -> Template:
    """The template a task names, or its own graph as one."""
    if task.template is not None:
        return templates.get(task.template)
    return Template.from_graph(task.workflow, name="workflow")


def task_source(argument: str, templates: list[str]) -> object:
    """A task file's JSON, or ``{"template": name}`` when the argument names a template."""
    path = Path(argument)
    if path.exists() or argument.endswith(".json") or "/" in argument:
        return read_task_file(path)
    if argument in templates:
        return {"template": argument}
    raise InvalidWorkflowError(
        f"{argument}: no such file or template{did_you_mean(argument, templates)}; "
        f"templates: {quote_list(templates)}",
        file=argument,
    )


def read_task_file(path: Path) -> object:
    """``main.py run FILE``: a graph, a template file (with ``_params``) or a task envelope."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise InvalidWorkflowError(f"{path}: cannot read: {exc.strerror}", file=str(path)) from None
    return jsonsafe.loads(text, source=str(path))
