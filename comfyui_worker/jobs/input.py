"""A job's task input, built from a file or template plus parameters, overrides and images.

``submit`` and the jobs page build the same envelope the worker reads
(``workflow/taskinput.py``), and validate it here before LittleHorse sees it, so a bad file
or parameter fails at once with ``invalid-workflow`` instead of as a failed WfRun.
Images are ``images`` entries: base64, or for ``submit`` and the page a staged path
when too large to travel inside a job (``jobs/staging.py``).
"""

from __future__ import annotations

import argparse
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.jobs.args import pairs
from comfyui_worker.workflow.params import ImageHint, envelope_hint
from comfyui_worker.workflow.request import task_source, template_for
from comfyui_worker.workflow.taskinput import parse_task_input
from comfyui_worker.workflow.templates import TemplateSet, plan

ImageSource = Callable[[str, bytes], dict[str, str]]  # (name, bytes) -> an ``images`` entry


def inline(name: str, data: bytes) -> dict[str, str]:
    """The image as base64 inside the input (``run``: no LittleHorse record to fit)."""
    return {"name": name, "base64": base64.b64encode(data).decode("ascii")}


def build_task_input(
    source: object,
    *,
    params: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    images: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The envelope: ``source`` (graph, template file or envelope) with the extras merged in.

    ``images`` are ``images`` entries (``{"name", "base64" | "path" | "url"}``).
    """
    task = parse_task_input(source)
    body: dict[str, Any] = task.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    if params:
        body["params"] = {**body.get("params", {}), **params}
    if overrides:
        body["overrides"] = {**body.get("overrides", {}), **overrides}
    if images:
        body["images"] = [*body.get("images", []), *images]
    parse_task_input(body)  # the merge itself may be wrong: a repeated image name
    return body


def check_parameters(
    task_input: dict[str, Any], templates: TemplateSet, image_hint: ImageHint = envelope_hint
) -> None:
    """Refuse, before any job exists, parameters and overrides the worker would refuse.

    The same check the worker makes (``templates.plan``): unknown names with a "did you
    mean", values of the wrong type, missing required parameters and images. A template
    this machine does not have is left to the worker, which still checks everything.
    """
    task = parse_task_input(task_input)
    if task.template is not None and task.template not in templates:
        return
    plan(
        template_for(task, templates),
        task.params,
        task.overrides,
        image_names=task.image_names,
        image_hint=image_hint,
    )


def read_image(name: str, path: Path) -> bytes:
    """An image file's bytes, for ``--image NAME=PATH``."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidWorkflowError(
            f"image {name!r}: cannot read {path}: {exc.strerror}", image=name, file=str(path)
        ) from None


def task_from_arguments(
    args: argparse.Namespace, templates: TemplateSet, source: ImageSource = inline
) -> dict[str, Any]:
    """The task input ``run`` and ``submit`` build from their arguments."""
    return build_task_input(
        task_source(args.workflow, templates.names()),
        params=pairs(args.param, "--param"),
        overrides=pairs(args.set, "--set"),
        images=[source(name, read_image(name, path)) for name, path in args.image],
    )
