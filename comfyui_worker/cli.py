"""Command line: run one workflow, check the setup, run the worker, register WfSpecs, jobs.

The job commands (``submit``, ``jobs``, ``ui``) are in ``jobs/args.py``/``jobs/commands.py``.
Each command imports what it needs when it runs, so ``main.py jobs --help`` loads no
worker engine (``tests/test_layout.py`` checks it).

Each failure's exit code comes from its error class (``errors.ExitCode``): 0 ok,
1 internal error, 2 usage, 3 configuration, 4 workflow invalid or output rejected,
5 execution failed or interrupted in ComfyUI, 6 ComfyUI unavailable or another
technical failure (retry later), 7 outputs could not be stored, 8 LittleHorse
unavailable or refusing, 9 not found, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from comfyui_worker import logs
from comfyui_worker.errors import ComfyWorkerError, ConfigError, ExitCode
from comfyui_worker.jobs import args as jobs_args
from comfyui_worker.settings import DeadlineSettings, WorkerSettings, load, load_comfy, load_worker

Command = Callable[[argparse.Namespace, WorkerSettings], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``worker`` is the default command)."""
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run one workflow and print the result JSON")
    jobs_args.task_arguments(run)
    run.add_argument("--output-dir", type=Path, help="override COMFYUI_OUTPUT_DIR")
    sub.add_parser("check", help="check settings, ComfyUI, output dir, templates, LittleHorse")
    sub.add_parser("worker", help="run the LittleHorse task worker (default)")
    register = sub.add_parser(
        "register", help="register the TaskDef and the comfyui-generate WfSpec"
    )
    register.add_argument(
        "--lane", type=jobs_args.lane_name, help="a priority lane's TaskDef and WfSpec instead"
    )
    jobs_args.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``main.py``."""
    args = build_parser().parse_args(argv)
    command: Command = COMMANDS[args.command or "worker"]
    try:
        settings = load_worker()
        logs.configure(settings.log_level, settings.log_format)
        return command(args, settings)
    except ConfigError as exc:
        print(f"configuration error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except ComfyWorkerError as exc:
        print(f"error [{exc.name}]: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def _worker(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from comfyui_worker.worker import service

    return service.serve(load_comfy(), settings)


def _register(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from comfyui_worker.worker import register

    return register.register(args.lane, load(DeadlineSettings), settings)


def _jobs(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from comfyui_worker.jobs import commands

    return commands.run(args, settings)


def _ui(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from comfyui_worker.jobs.commands import connect
    from comfyui_worker.jobs.settings import JobsSettings, UiSettings
    from comfyui_worker.web.server import serve

    return serve(load(UiSettings), load(JobsSettings), connect(settings))


def _check(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from comfyui_worker.worker.checks import run_checks

    return run_checks(load_comfy(), settings)


def _run(args: argparse.Namespace, settings: WorkerSettings) -> int:
    """``main.py run``: one workflow, progress on stderr, result JSON on stdout."""
    import structlog

    from comfyui_worker.jobs.args import image_flag
    from comfyui_worker.jobs.input import task_from_arguments
    from comfyui_worker.run.execution import Runner
    from comfyui_worker.run.progress import Progress
    from comfyui_worker.workflow.request import Identity, TaskPreparer

    comfy = load_comfy()
    if args.output_dir is not None:
        comfy = comfy.model_copy(update={"output_dir": args.output_dir, "output_url": None})
    preparer = TaskPreparer(comfy)
    prompt_id = str(uuid.uuid4())
    request = preparer.request(
        task_from_arguments(args, preparer.templates),
        Identity(prompt_id=prompt_id, run_key=prompt_id, fresh=True),
        image_hint=image_flag,
    )
    structlog.contextvars.bind_contextvars(prompt_id=prompt_id)
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, _interrupt)
    with Runner(comfy) as runner:
        runner.store.check_writable()  # as the worker does: no GPU work for outputs with no home
        try:
            result = runner.run(request, on_event=Progress(request.graph))
        except KeyboardInterrupt:
            state = runner.cancelled or "not submitted"
            print(f"interrupted; prompt {prompt_id} was {state}", file=sys.stderr)
            return ExitCode.INTERRUPTED
    print(json.dumps(result.manifest_json(), indent=2))
    return ExitCode.OK


def _interrupt(signum: int, frame: object) -> NoReturn:
    """SIGTERM during ``run`` is handled like Ctrl-C: the prompt is cancelled in ComfyUI."""
    raise KeyboardInterrupt


COMMANDS: dict[str, Command] = {
    "run": _run,
    "check": _check,
    "worker": _worker,
    "register": _register,
    "submit": _jobs,
    "jobs": _jobs,
    "ui": _ui,
}
