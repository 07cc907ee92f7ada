"""Structured logs: library records folded in, repeats dropped, models as data, task context."""

from __future__ import annotations

import logging

import structlog

from comfyui_worker.logs import RepeatFilter, _plain_data, outside_task
from comfyui_worker.result import Timings


def record(message: str, name: str = "LHTaskWorker") -> logging.LogRecord:
    """A stdlib record as the SDK makes one."""
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, None)


def test_a_repeated_message_passes_once_per_window_and_counts_the_rest():
    """Three alike within the window: one passes; after it, the next says two were dropped."""
    repeats = RepeatFilter(window_s=3600)
    assert repeats.filter(record("Error when registering task worker"))
    assert not repeats.filter(record("Error when registering task worker"))
    assert not repeats.filter(record("Error when registering task worker"))
    assert repeats.filter(record("another message"))
    repeats.window_s = 0  # the window has passed
    later = record("Error when registering task worker")
    assert repeats.filter(later) and getattr(later, "repeats_dropped", None) == 2


def test_models_are_logged_as_their_data():
    """``timings_ms=Timings(...)`` becomes a dict, never a Python repr."""
    timings = Timings(queued=1, executing=2, downloading=3, total=6, comfy_execution=2)
    event = _plain_data(None, "info", {"event": "task.succeeded", "timings_ms": timings})
    assert event["timings_ms"] == {
        "queued": 1,
        "executing": 2,
        "downloading": 3,
        "total": 6,
        "comfy_execution": 2,
    }


def test_worker_facts_are_logged_outside_the_task_and_the_task_is_restored():
    """Inside ``outside_task`` no prompt_id is bound; after it, the task's context is back."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(prompt_id="p-1", task_guid="g")
    with outside_task():
        assert structlog.contextvars.get_contextvars() == {}
    assert structlog.contextvars.get_contextvars() == {"prompt_id": "p-1", "task_guid": "g"}
    structlog.contextvars.clear_contextvars()
