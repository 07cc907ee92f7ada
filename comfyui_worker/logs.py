"""Structured logging: stable event names, bound context, stderr only.

stdout stays free for results (``main.py run`` prints JSON there). The SDK's stdlib
loggers are routed to the same stream at WARNING so its per-poll chatter stays out.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR


def configure(level: str = "info", fmt: str = "console") -> None:
    """Configure structlog (and stdlib logging for the SDK) once at start-up."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("LHConfig").setLevel(logging.ERROR)  # warns on every insecure channel
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_reported_task_traces)


def _drop_reported_task_traces(record: logging.LogRecord) -> bool:
    """Drop the SDK's traceback for failures we already logged as task.*_failure events."""
    message = str(record.msg)
    return not (
        message.startswith("Traceback")
        and ("LHTaskException: " in message or "comfyui_worker.errors." in message)
    )


@contextmanager
def outside_task() -> Iterator[None]:
    """Log a fact of the worker (ComfyUI's version, a reconnect) without the task bound now.

    Such a line is learned during some task but is not about it: carrying that task's
    ``prompt_id`` would send a reader to the wrong prompt.
    """
    saved = structlog.contextvars.get_contextvars()
    structlog.contextvars.clear_contextvars()
    try:
        yield
    finally:
        structlog.contextvars.bind_contextvars(**saved)
