"""Structured logging: stable event names, bound context, stderr only.

stdout stays free for results (``main.py run`` prints JSON there). The SDK's and other
libraries' stdlib loggers go through the same renderer at WARNING (event ``lib.log``,
with ``logger`` and ``message``), one line each, and the same message from the same
logger at most once per ``REPEAT_WINDOW_S`` (the next one says how many were dropped):
with ``WORKER_LOG_FORMAT=json`` a log shipper never sees a line that is not JSON.
gRPC's C core prints to stderr on its own; in JSON mode it is silenced
(``GRPC_VERBOSITY=NONE``) since every failure it reports also surfaces as an error here.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from pydantic import BaseModel

REPEAT_WINDOW_S = 30.0

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR


def configure(level: str = "info", fmt: str = "console") -> None:
    """Configure structlog, and stdlib logging for the SDK, once at start-up."""
    if fmt == "json":  # before grpc loads: its C core would print plain lines to stderr
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    common: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _plain_data,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *common, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_library_event, *common],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(_drop_reported_task_traces)
    handler.addFilter(RepeatFilter(REPEAT_WINDOW_S))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("LHConfig").setLevel(logging.ERROR)  # warns on every insecure channel


def _plain_data(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Render models as their data (``{"queued": 1, ...}``), never as a Python repr."""
    for key, value in event.items():
        if isinstance(value, BaseModel):
            event[key] = value.model_dump(mode="json")
    return event


def _library_event(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A stdlib record as one event: ``lib.log`` with its logger, message and repeats."""
    record: logging.LogRecord = event["_record"]
    event["message"] = event.pop("event", "")
    event["event"] = "lib.log"
    event["logger"] = record.name
    dropped = getattr(record, "repeats_dropped", 0)
    if dropped:
        event["repeats_dropped"] = dropped
    return event


class RepeatFilter(logging.Filter):
    """Pass a logger's message once per window; the next pass counts what was dropped.

    While LittleHorse is away the SDK logs the same failure every few seconds with a
    traceback; one line per window says as much.
    """

    def __init__(self, window_s: float) -> None:
        super().__init__()
        self.window_s = window_s
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to emit ``record`` (marking how many like it were dropped before)."""
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = time.monotonic()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        record.repeats_dropped = seen[1] if seen is not None else 0
        self._last[key] = (now, 0)
        return True


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
