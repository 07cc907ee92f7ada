"""The job commands' arguments: ``submit``, ``jobs [show|retry|cancel]``, ``ui``.

Only argparse here, so building ``main.py``'s parser loads no SDK; ``jobs/commands.py``
runs the commands.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.jobs.model import STATUS_FILTERS
from comfyui_worker.settings import is_lane_name
from comfyui_worker.workflow import jsonsafe

JOB_ID = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")  # LittleHorse's WfRun ids
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def lane_name(value: str) -> str:
    """``--lane``: kebab-case, as it becomes part of TaskDef and WfSpec names."""
    if not is_lane_name(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a kebab-case lane name (e.g. urgent)")
    return value


def job_id(value: str) -> str:
    """``--id``: LittleHorse takes letters, digits and inner hyphens as a WfRun id."""
    if len(value) > 128 or not JOB_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a job id: letters, digits and hyphens inside (not first or "
            "last), at most 128 characters, e.g. order-4711"
        )
    return value


def image_pair(value: str) -> tuple[str, Path]:
    """``--image NAME=PATH``."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expects NAME=PATH, got {value!r}")
    return name, Path(path)


def since(value: str) -> datetime:
    """``--since``: an age such as ``30m``, ``1h``, ``2d``, or an ISO 8601 time."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", value.strip())
    if match:
        return datetime.now(UTC) - timedelta(seconds=float(match[1]) * UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither an age (30m, 1h, 2d) nor an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``submit``, ``jobs`` and ``ui`` to ``main.py``'s subcommands."""
    _submit(sub.add_parser("submit", help="start a job (a WfRun) and print its id"))
    _jobs(sub.add_parser("jobs", help="list recent jobs; show, retry or cancel one"))
    sub.add_parser("ui", help="serve the jobs page (WORKER_UI_HOST:WORKER_UI_PORT)")


def task_arguments(parser: argparse.ArgumentParser) -> None:
    """What a task is made of, alike for ``run`` and ``submit``: graph, params, images."""
    parser.add_argument(
        "workflow", help="a graph, template or task JSON file, or a template name (e.g. smoke)"
    )
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        type=image_pair,
        metavar="NAME=PATH",
        help="an input image file",
    )


def image_flag(name: str) -> str:
    """How the command line gives a missing image (``params.ImageHint``)."""
    return f"give it with --image {name}=PATH"


def _submit(parser: argparse.ArgumentParser) -> None:
    task_arguments(parser)
    parser.add_argument(
        "--id", type=job_id, help="the job's id: submitting the same id again runs it once"
    )
    _lane(parser)
    _follow(parser)
    parser.add_argument(
        "--download", type=Path, metavar="DIR", help="wait, then fetch the outputs into DIR"
    )


def _jobs(parser: argparse.ArgumentParser) -> None:
    _lane(parser)
    parser.add_argument("--status", choices=tuple(STATUS_FILTERS), help="only jobs in this state")
    parser.add_argument(
        "--since", type=since, metavar="AGE|TIME", help="started since (30m, 1h, 2d; or ISO time)"
    )
    parser.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    parser.add_argument("--retry-of", metavar="ID", help="only the retries of this job")
    parser.add_argument("--json", action="store_true", help="print JSON")
    actions = parser.add_subparsers(dest="action")
    show = actions.add_parser("show", help="a job's status, timings, input, result, error, trail")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print JSON")
    retry = actions.add_parser("retry", help="run a job again with the same input")
    retry.add_argument("id")
    retry.add_argument("--id", dest="new_id", type=job_id, help="the new job's id (idempotent)")
    _follow(retry)
    cancel = actions.add_parser("cancel", help="stop a job; its prompt is cancelled in ComfyUI")
    cancel.add_argument("id")
    cancel.add_argument("--wait", action="store_true", help="until the worker has stopped it")


def _lane(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--lane", type=lane_name, help="a priority lane (e.g. urgent)")
    group.add_argument("--wf-spec", metavar="NAME", help="another WfSpec than comfyui-generate")


def _follow(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="follow it; print the result JSON; exit like `run`"
    )


def pairs(items: list[str], flag: str) -> dict[str, Any]:
    """Parse NAME=VALUE pairs; VALUE is JSON when it parses (so 42 stays an int)."""
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"{flag} expects NAME=VALUE, got {item!r}")
        try:
            parsed[name] = jsonsafe.loads(raw, source=flag)
        except InvalidWorkflowError:
            parsed[name] = raw
    return parsed
