"""``main.py check``: is this worker ready to run? One line per check, worst exit code.

Exit code: 0 when every check passes, else the highest of the failing checks'
codes: 4 a template file is broken, 6 ComfyUI unreachable, 7 the output location
is not writable, 8 LittleHorse unreachable (checked only when ``LHC_API_HOST`` is set).
Each template is also checked against this ComfyUI's ``/object_info`` (preflight): one
that names a model or node ComfyUI lacks is a warning saying which, since the worker
still runs the others. A template's declared models (``_models``) are listed with
whether this ComfyUI has them; a missing one is fetched on first use, so it is no failure.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.errors import ComfyWorkerError, ExitCode
from comfyui_worker.models.ensure import PRESENT, ModelEnsurer
from comfyui_worker.outputs.store import open_store
from comfyui_worker.settings import ComfySettings, WorkerSettings
from comfyui_worker.workflow.graph import Graph
from comfyui_worker.workflow.modeldecl import ModelDecl
from comfyui_worker.workflow.placeholders import references
from comfyui_worker.workflow.preflight import find_problems
from comfyui_worker.workflow.templates import TemplateSet, load_templates

OK, WARN, FAIL = "ok", "warn", "FAIL"
Say = Callable[[str, str], None]


def run_checks(comfy: ComfySettings, worker: WorkerSettings, out: TextIO | None = None) -> int:
    """Run every check, print a line each, return 0 or the most serious exit code."""
    stream = out or sys.stdout

    def say(status: str, text: str) -> None:
        print(f"{status:<5} {text}", file=stream)

    say(OK, f"settings valid (task {worker.task_name}, ComfyUI {comfy.base_url_str})")
    info: dict[str, Any] = {}
    codes = [
        _guarded(say, "ComfyUI", lambda: _comfy(comfy, info)),
        _guarded(say, "output", lambda: _output(comfy)),
        _templates(load_templates(comfy.workflows_dir), say, info, comfy),
    ]
    if worker.lh_api_host:
        codes.append(_guarded(say, "LittleHorse", lambda: _littlehorse(worker)))
    return max(codes)


def _guarded(say: Say, what: str, check: Callable[[], str | tuple[str, str]]) -> int:
    """Run one check: its line on success (``ok`` unless it says), else its error and code."""
    try:
        line = check()
        say(*(line if isinstance(line, tuple) else (OK, line)))
    except ComfyWorkerError as exc:
        say(FAIL, f"{what}: {exc.message}")
        return exc.exit_code
    return 0


def _comfy(comfy: ComfySettings, info: dict[str, Any]) -> str:
    """ComfyUI answers; ``info`` receives its ``/object_info`` for the templates' check."""
    with ComfyClient(comfy) as client:
        stats = client.system_stats()
        jobs = client.has_jobs_api()
        info.update(client.object_info())
    system = stats.get("system", {})
    devices = ", ".join(str(d.get("name")) for d in stats.get("devices", [])) or "no devices"
    api = "with the jobs API" if jobs else "without the jobs API"
    return f"ComfyUI {system.get('comfyui_version', 'unknown')} reachable ({devices}; {api})"


def _output(comfy: ComfySettings) -> tuple[str, str]:
    store = open_store(comfy)
    absent = store.missing()
    where = store.check_writable()
    if absent is None:
        return OK, f"outputs: {where} is writable"
    return WARN, (
        f"outputs: {where} is writable, but {absent} did not exist: this check's write "
        "created it (if the name is a typo, fix the output setting and remove it)"
    )


def _littlehorse(worker: WorkerSettings) -> str:
    from comfyui_worker.lh.api import LittleHorse, lh_config  # gRPC loads only when asked

    state = LittleHorse(lh_config(), worker.lh_address).ping(worker.task_name)
    return f"LittleHorse at {worker.lh_address} reachable ({state})"


def _templates(
    templates: TemplateSet, say: Say, object_info: dict[str, Any], comfy: ComfySettings
) -> int:
    for name in templates.names():
        template = templates.get(name)
        if template.models:
            line, unfetchable = _models(template.models, comfy, object_info)
            say(WARN if unfetchable else OK, f"template {name} models: {line}")
        shown = ", ".join(
            p["name"] + ("" if p["required"] else f"={p['default']!r}") for p in template.describe()
        )
        declared = {m.name for m in template.models}
        missing = _cannot_run(template.graph, object_info, declared) if object_info else []
        if missing:
            say(WARN, f"template {name}({shown}) cannot run on this ComfyUI: {'; '.join(missing)}")
        else:
            say(OK, f"template {name}({shown})")
    for file, reason in templates.errors.items():
        say(FAIL, f"template file {file}: {reason}")
    if not templates.names() and not templates.errors:
        say(WARN, f"no templates in {templates.directory}")
    return ExitCode.WORKFLOW if templates.errors else 0


def _models(
    models: tuple[ModelDecl, ...], comfy: ComfySettings, reached: dict[str, Any]
) -> tuple[str, bool]:
    """Each declared model and whether this ComfyUI has it; and whether one is unfetchable.

    A missing model is fetched on first use, unless ``COMFYUI_MODELS_DIR`` is unset: then
    every task that needs it would fail, which is worth a warning.
    """
    if not reached:
        return ", ".join(f"{m.key} (ComfyUI not reached)" for m in models), False
    with ComfyClient(comfy) as client:
        ensurer = ModelEnsurer(comfy, client)
        try:
            statuses = [(m.key, ensurer.status(m)) for m in models]
        except ComfyWorkerError as exc:
            return f"{', '.join(m.key for m in models)} (cannot ask ComfyUI: {exc.message})", False
    unfetchable = comfy.models_dir is None and any(s != PRESENT for _, s in statuses)
    return ", ".join(f"{key} {status}" for key, status in statuses), unfetchable


def _cannot_run(graph: Graph, object_info: dict[str, Any], declared: set[str]) -> list[str]:
    """What ComfyUI lacks for a template; placeholders and declared models are not judged."""
    return [
        str(problem["message"])
        for problem in find_problems(graph, object_info)
        if not (isinstance(problem.get("value"), str) and any(references(problem["value"])))
        and problem.get("value") not in declared
    ]
