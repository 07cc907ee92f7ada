"""Command line: run one workflow, check the setup, run the worker, register WfSpecs.

Exit codes are distinct per kind of failure so scripts can react:
0 ok, 1 internal error, 2 usage, 3 configuration, 4 workflow invalid or output
rejected, 5 execution failed or interrupted in ComfyUI, 6 ComfyUI unavailable or
transient failure (retry later).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import structlog

from comfyui_worker import logs
from comfyui_worker.errors import (
    ComfyWorkerError,
    ExecutionFailedError,
    ExecutionInterruptedError,
    TransientError,
    WorkflowError,
)
from comfyui_worker.settings import SettingsError, load_comfy, load_worker

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3
EXIT_WORKFLOW, EXIT_EXECUTION, EXIT_UNAVAILABLE = 4, 5, 6


def exit_code(error: ComfyWorkerError) -> int:
    """Map an error to the CLI's exit code."""
    if isinstance(error, WorkflowError):
        return EXIT_WORKFLOW
    if isinstance(error, ExecutionFailedError | ExecutionInterruptedError):
        return EXIT_EXECUTION
    return EXIT_UNAVAILABLE if isinstance(error, TransientError) else EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``worker`` is the default command)."""
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run one workflow and print the result JSON")
    run.add_argument("workflow", type=Path, help="API-format graph, template or task JSON")
    run.add_argument("--output-dir", type=Path, help="override COMFYUI_OUTPUT_DIR")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE")
    sub.add_parser("check", help="check settings, ComfyUI, output dir and templates")
    sub.add_parser("worker", help="run the LittleHorse task worker (default)")
    sub.add_parser("register", help="register the TaskDef and the example WfSpec")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``main.py``."""
    args = build_parser().parse_args(argv)
    command = args.command or "worker"
    try:
        worker_settings = load_worker()
        logs.configure(worker_settings.log_level, worker_settings.log_format)
        if command == "run":
            return _run(args)
        if command == "check":
            from comfyui_worker.checks import run_checks

            return run_checks(load_comfy(), worker_settings)
        from comfyui_worker import service

        comfy = load_comfy()
        if command == "register":
            return service.register(comfy, worker_settings)
        return service.serve(comfy, worker_settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ComfyWorkerError as exc:
        print(f"error [{exc.name}]: {exc.message}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    """``main.py run``: one workflow, progress on stderr, result JSON on stdout."""
    from comfyui_worker.execution import Runner, RunRequest
    from comfyui_worker.progress import Progress
    from comfyui_worker.tasks import prepare_file

    settings = load_comfy()
    if args.output_dir is not None:
        settings = settings.model_copy(update={"output_dir": args.output_dir})
    prompt_id = str(uuid.uuid4())
    prepared = prepare_file(
        args.workflow,
        settings,
        params=_pairs(args.param, "--param"),
        overrides=_pairs(args.set, "--set"),
        unique_prefix=prompt_id[:8],
    )
    runner = Runner(settings)
    structlog.contextvars.bind_contextvars(prompt_id=prompt_id)
    try:
        result = runner.run(
            RunRequest(
                graph=prepared.graph,
                prompt_id=prompt_id,
                run_key=prompt_id,
                uploads=prepared.uploads,
                params=prepared.params,
                template=prepared.template,
            ),
            on_event=Progress(prepared.graph),
        )
    finally:
        runner.close()
    print(json.dumps(result, indent=2))
    return EXIT_OK


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    """Parse NAME=VALUE pairs; VALUE is JSON when it parses (so 42 stays an int)."""
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"{flag} expects NAME=VALUE, got {item!r}")
        try:
            parsed[name] = json.loads(raw)
        except ValueError:
            parsed[name] = raw
    return parsed
