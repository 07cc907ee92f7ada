"""From task input to a graph ready to submit: envelope, template, params, images.

Shared by the LittleHorse handler and ``main.py run`` so both accept the same input.
Blocking (an image may be fetched from a URL): call it from the execution thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.images import ResolvedImage, bind_images, resolve_images
from comfyui_worker.settings import ComfySettings
from comfyui_worker.task_input import parse_task_input
from comfyui_worker.templates import Template, TemplateSet, load_templates, render

log = structlog.get_logger("comfyui_worker.tasks")


@dataclass(frozen=True)
class Prepared:
    """A graph ready for ComfyUI, the images it needs uploaded, and the values used."""

    graph: dict[str, Any]
    uploads: list[ResolvedImage] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    template: str | None = None


class TaskPreparer:
    """Holds the worker's templates (loaded once) and prepares each task's graph."""

    def __init__(self, settings: ComfySettings, templates: TemplateSet | None = None) -> None:
        self.settings = settings
        self.templates = templates or load_templates(settings.workflows_dir)
        for file, reason in self.templates.errors.items():
            log.error("templates.broken", file=file, reason=reason)
        log.info(
            "templates.loaded", directory=str(settings.workflows_dir), names=self.templates.names()
        )

    def prepare(
        self,
        obj: object,
        *,
        unique_prefix: str,
        params: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Prepared:
        """Parse the input, render its template or graph, resolve and bind its images."""
        task = parse_task_input(obj)
        if task.template is not None:
            template = self.templates.get(task.template)
        else:
            template = Template.from_graph(task.workflow, name="workflow")
        rendered = render(
            template,
            {**task.params, **(params or {})},
            {**task.overrides, **(overrides or {})},
            image_names=task.image_names,
        )
        images = resolve_images(task.images, self.settings, unique_prefix=unique_prefix)
        graph = bind_images(rendered.graph, images)
        return Prepared(graph, images, rendered.params, task.template)


def prepare_file(
    path: Path,
    settings: ComfySettings,
    *,
    params: dict[str, Any],
    overrides: dict[str, Any],
    unique_prefix: str,
) -> Prepared:
    """``main.py run FILE``: a graph, a template file (with ``_params``) or a task envelope."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidWorkflowError(f"{path}: cannot read: {exc.strerror}", file=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidWorkflowError(f"{path}: not valid JSON: {exc}", file=str(path)) from None
    preparer = TaskPreparer(settings)
    return preparer.prepare(obj, unique_prefix=unique_prefix, params=params, overrides=overrides)
