"""Wait for a submitted prompt: WebSocket wake-ups, /history as truth, /queue for liveness.

Every wake-up (a terminal event for our prompt, a queue change, a socket drop) costs
one GET /history. Every ``poll_interval_s`` a full tick also reads /queue, so a
prompt that ComfyUI forgot (restart) is found within ``VANISHED_AFTER_TICKS`` ticks,
and completions are never missed even with the socket down.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog

from comfyui_worker.client import ComfyClient
from comfyui_worker.errors import (
    ComfyOutOfMemoryError,
    ExecutionFailedError,
    ExecutionInterruptedError,
    ExecutionTimeoutError,
    PromptVanishedError,
    WorkerShuttingDownError,
)
from comfyui_worker.events import EventStream, ProgressCallback

log = structlog.get_logger("comfyui_worker.waiting")

VANISHED_AFTER_TICKS = 3
RACE_RECHECK_S = 0.005  # execution_success can beat /history by a few ms


@dataclass(frozen=True)
class Finished:
    """A history entry that ended in success, and when the worker learned of it."""

    entry: dict[str, Any]
    detected_at: float  # time.monotonic()


def wait_for_prompt(
    client: ComfyClient,
    events: EventStream,
    prompt_id: str,
    *,
    deadline: float,
    poll_interval_s: float,
    on_event: ProgressCallback | None = None,
    abort: threading.Event | None = None,
) -> Finished:
    """Block until ``prompt_id`` is in /history; raise for errors, interrupts, deadline."""
    missing_ticks = 0
    next_tick = 0.0
    race_pause_s = RACE_RECHECK_S
    with events.watch(prompt_id, on_event) as watch:
        while True:
            entry = client.history(prompt_id)
            if entry is not None:
                return Finished(outcome(prompt_id, entry), time.monotonic())
            now = time.monotonic()
            if abort is not None and abort.is_set():
                state = cancel(client, prompt_id)
                raise WorkerShuttingDownError(
                    f"worker shut down while prompt {prompt_id} ran; it was {state}",
                    prompt_id=prompt_id,
                )
            if now >= deadline:
                raise _DeadlinePassed
            if now >= next_tick:
                missing_ticks = _tick(client, prompt_id, missing_ticks)
                next_tick = now + poll_interval_s
            pause = next_tick - now
            if watch.terminal_seen:  # finished per the socket; /history lags by a few ms
                pause, race_pause_s = min(pause, race_pause_s), race_pause_s * 2
            watch.wait(min(pause, deadline - now))


class _DeadlinePassed(Exception):
    """Internal: the execution deadline passed while waiting."""


def _tick(client: ComfyClient, prompt_id: str, missing_ticks: int) -> int:
    """Count ticks on which the prompt is neither queued, running nor finished."""
    if client.knows(prompt_id):
        return 0
    missing_ticks += 1
    log.warning("comfy.prompt_missing", missing_ticks=missing_ticks)
    if missing_ticks >= VANISHED_AFTER_TICKS:
        raise PromptVanishedError(
            f"prompt {prompt_id} is in neither ComfyUI's queue nor its history "
            f"(checked {missing_ticks} times): ComfyUI probably restarted",
            prompt_id=prompt_id,
        )
    return missing_ticks


def wait_or_cancel(
    client: ComfyClient,
    events: EventStream,
    prompt_id: str,
    *,
    timeout_s: float,
    poll_interval_s: float,
    on_event: ProgressCallback | None = None,
    abort: threading.Event | None = None,
) -> Finished:
    """Like ``wait_for_prompt`` with a deadline that frees the GPU when it passes."""
    try:
        return wait_for_prompt(
            client,
            events,
            prompt_id,
            deadline=time.monotonic() + timeout_s,
            poll_interval_s=poll_interval_s,
            on_event=on_event,
            abort=abort,
        )
    except _DeadlinePassed:
        state = cancel(client, prompt_id)
        raise ExecutionTimeoutError(
            f"prompt {prompt_id} did not finish within {timeout_s:g}s "
            f"(COMFYUI_HISTORY_TIMEOUT_SEC); it was {state}",
            prompt_id=prompt_id,
            timeout_s=timeout_s,
            cancelled=state,
        ) from None


def cancel(client: ComfyClient, prompt_id: str) -> str:
    """Free the GPU: delete the prompt if pending, interrupt it if running."""
    queue = client.queue()
    if prompt_id in queue.pending:
        client.delete_pending([prompt_id])
        queue = client.queue()  # it may have started in between
        if prompt_id not in queue.running:
            log.info("comfy.prompt_deleted", prompt_id=prompt_id)
            return "deleted from the queue"
    if prompt_id in queue.running:
        client.interrupt(prompt_id)
        log.info("comfy.prompt_interrupted", prompt_id=prompt_id)
        return "interrupted"
    return "no longer queued"


def outcome(prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Return a successful entry; raise the matching error for a failed one."""
    status = entry.get("status") or {}
    if status.get("status_str", "success") == "success":
        return entry
    messages = {kind: data for kind, data in status.get("messages", []) if isinstance(data, dict)}
    if "execution_interrupted" in messages:
        data = messages["execution_interrupted"]
        raise ExecutionInterruptedError(
            f"prompt {prompt_id} was interrupted in ComfyUI at node {data.get('node_id')} "
            f"({data.get('node_type')})",
            prompt_id=prompt_id,
            node_id=data.get("node_id"),
            node_type=data.get("node_type"),
        )
    raise _execution_error(prompt_id, messages.get("execution_error", {}))


def _execution_error(prompt_id: str, data: dict[str, Any]) -> Exception:
    """A node raised: out-of-memory is retryable, anything else is the workflow's fault."""
    details = {
        "prompt_id": prompt_id,
        "node_id": data.get("node_id"),
        "node_type": data.get("node_type"),
        "exception_type": data.get("exception_type"),
        "exception_message": str(data.get("exception_message", "")).strip(),
    }
    text = (
        f"node {details['node_id']} ({details['node_type']}) raised "
        f"{details['exception_type']}: {details['exception_message']}"
    )
    if _is_oom(details):
        return ComfyOutOfMemoryError(f"ComfyUI ran out of memory: {text}", **details)
    return ExecutionFailedError(text, **details)


def _is_oom(details: dict[str, Any]) -> bool:
    kind = str(details["exception_type"] or "")
    message = str(details["exception_message"]).lower()
    return "OutOfMemory" in kind or "out of memory" in message or "allocation on device" in message
