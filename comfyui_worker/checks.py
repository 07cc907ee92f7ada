"""``main.py check``: is this worker ready to run? One line per check, worst exit code."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from typing import TextIO

from comfyui_worker.cli import EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_WORKFLOW
from comfyui_worker.client import ComfyClient
from comfyui_worker.errors import ComfyWorkerError
from comfyui_worker.settings import ComfySettings, WorkerSettings
from comfyui_worker.templates import TemplateSet, load_templates

OK, WARN, FAIL = "ok", "warn", "FAIL"


def run_checks(comfy: ComfySettings, worker: WorkerSettings, out: TextIO | None = None) -> int:
    """Run every check, print a line each, return 0 or the most serious exit code."""
    stream = out or sys.stdout

    def say(status: str, text: str) -> None:
        print(f"{status:<5} {text}", file=stream)

    say(OK, f"settings valid (task {worker.task_name}, ComfyUI {comfy.base_url_str})")
    codes = [
        _comfy(comfy, say, EXIT_UNAVAILABLE),
        _output_dir(comfy, say, EXIT_CONFIG),
        _templates(load_templates(comfy.workflows_dir), say, EXIT_WORKFLOW),
    ]
    return max(codes)


def _comfy(comfy: ComfySettings, say: Callable[[str, str], None], code: int) -> int:
    try:
        with ComfyClient(comfy) as client:
            stats = client.system_stats()
    except ComfyWorkerError as exc:
        say(FAIL, f"ComfyUI: {exc.message}")
        return code
    system = stats.get("system", {})
    devices = ", ".join(str(d.get("name")) for d in stats.get("devices", [])) or "no devices"
    say(OK, f"ComfyUI {system.get('comfyui_version', 'unknown')} reachable ({devices})")
    return 0


def _output_dir(comfy: ComfySettings, say: Callable[[str, str], None], code: int) -> int:
    try:
        say(OK, f"output directory {output_dir_writable(comfy)} is writable")
    except OSError as exc:
        say(FAIL, f"output directory {comfy.output_dir}: {exc.strerror or exc}")
        return code
    return 0


def _templates(templates: TemplateSet, say: Callable[[str, str], None], code: int) -> int:
    for name in templates.names():
        params = templates.get(name).describe()
        shown = ", ".join(
            p["name"] + ("" if p["required"] else f"={p['default']!r}") for p in params
        )
        say(OK, f"template {name}({shown})")
    for file, reason in templates.errors.items():
        say(FAIL, f"template file {file}: {reason}")
    if not templates.names() and not templates.errors:
        say(WARN, f"no templates in {templates.directory}")
    return code if templates.errors else 0


def output_dir_writable(settings: ComfySettings) -> str:
    """Create the output dir if needed and prove a file can be written there."""
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    probe = settings.output_dir / f".write-check-{uuid.uuid4().hex}"
    probe.write_bytes(b"ok")
    probe.unlink()
    return str(settings.output_dir.resolve())
