"""Wait for a submitted prompt: WebSocket wake-ups, /history as truth, /queue for liveness.

Every wake-up (a terminal event for our prompt, a socket drop, and for an adopted
prompt, whose events go to another socket, a queue change) costs one GET /history.
Every ``poll_interval_s`` a full tick also reads /queue, so a prompt that ComfyUI
forgot (restart) is found within ``VANISHED_AFTER_TICKS`` ticks, and completions are
never missed even with the socket down. While the prompt is known to ComfyUI,
transient HTTP failures are ridden out up to the deadline: a burst of 5xx must not
fail a healthy generation. Whatever ends the wait early (deadline,
shutdown, a cancelled job) frees the GPU first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.comfy.events import Watch
from comfyui_worker.comfy.history import HistoryEntry
from comfyui_worker.errors import (
    ComfyOutOfMemoryError,
    ComfyWorkerError,
    ExecutionFailedError,
    ExecutionInterruptedError,
    ExecutionTimeoutError,
    PromptVanishedError,
    TechnicalError,
    WorkerShuttingDownError,
)
from comfyui_worker.workflow.graph import fingerprint

log = structlog.get_logger("comfyui_worker.comfy.waiting")

VANISHED_AFTER_TICKS = 3
RACE_RECHECK_S = 0.005  # execution_success can beat /history by a few ms
EVENTS_GRACE_S = 0.05  # /history can beat the socket's last events: let them arrive
FILED_GRACE_S = 0.05  # how long to wait for "in /history now" after the terminal event
_FAILED_CALL = object()  # a call that failed in transport: no news, not "not found"

# Called at each tick; returns an error to end the wait with (a cancelled job, a
# fenced attempt) after the prompt was cancelled, or None to go on waiting.
StopCheck = Callable[[], ComfyWorkerError | None]


@dataclass(frozen=True)
class Finished:
    """A history entry that ended in success, and when the worker learned of it."""

    entry: HistoryEntry
    detected_at: float  # time.monotonic()


@dataclass
class WaitPolicy:
    """How long and how often to look, and what may end the wait early.

    ``timeout_s`` counts from the prompt's own execution start: with prefetch a prompt
    waits in ComfyUI's queue behind the one running, and that wait is not its fault.
    A prompt still pending gets ``pending_timeout_s`` from the start of the wait.
    ``hand_back`` set (the worker is draining) dequeues a prompt that has not started.
    """

    timeout_s: float
    poll_interval_s: float
    abort: threading.Event
    stop: StopCheck | None = None
    pending_timeout_s: float | None = None
    hand_back: threading.Event | None = None


class Waiter:
    """One wait for one prompt; ``run`` returns the successful entry or raises."""

    def __init__(
        self,
        client: ComfyClient,
        watch: Watch,
        policy: WaitPolicy,
        graph_sha256: str | None = None,
    ) -> None:
        self.client = client
        self.watch = watch
        self.prompt_id = watch.prompt_id
        self.policy = policy
        self.graph_sha256 = graph_sha256  # the graph we expect under this id, if known
        self._stale_seen = False
        self._missing_ticks = 0
        self._began = time.monotonic()
        self._started_at: float | None = None

    def run(self) -> Finished:
        """Block until the prompt is in /history; raise for errors, interrupts, deadline.

        For a prompt we just submitted (``watch.own``) with the socket up, its terminal
        event (or a reconnect's wake-up) will come: a first GET /history would only
        compete with ComfyUI for the CPU while it executes.
        """
        next_tick = self._began + self.policy.poll_interval_s  # liveness can wait a tick
        race_pause_s = RACE_RECHECK_S
        look = not (self.watch.own and self.watch.connected())
        while True:
            if look and self.watch.terminal_seen:
                self._await_filing()
            entry = self._ride_out(self._history) if look else None
            look = True
            if isinstance(entry, HistoryEntry):
                self._let_events_arrive()
                return Finished(outcome(self.prompt_id, entry), time.monotonic())
            now = time.monotonic()
            if self._started_at is None and self.watch.started:
                self._started_at = now
            self._check_abort_and_deadline(now)
            if now >= next_tick:
                self._tick()
                next_tick = now + self.policy.poll_interval_s
            pause = next_tick - now
            if self.watch.terminal_seen:  # finished per the socket; /history lags by a few ms
                pause, race_pause_s = min(pause, race_pause_s), race_pause_s * 2
            self.watch.wait(max(min(pause, self._deadline() - now), 0.0))

    def _await_filing(self) -> None:
        """Ask /history once ComfyUI says it filed our prompt there, not a moment before.

        Only for our own prompt (its client gets the signal) on a server seen sending
        it; a lost signal costs at most ``FILED_GRACE_S``, then /history is asked anyway.
        """
        watch = self.watch
        if watch.own and watch.connected() and watch.announces_filing():
            watch.wait_filed(FILED_GRACE_S)

    def _history(self) -> HistoryEntry | None:
        entry = self.client.history(self.prompt_id)
        return entry if entry is None or self._is_ours(entry) else None

    def _is_ours(self, entry: HistoryEntry) -> bool:
        """Whether a history entry is our prompt's, not an older one under the same id.

        ComfyUI files a duplicate prompt id without complaint and keeps serving the old
        entry until the new prompt finishes (then it replaces it). So an entry holding
        another graph counts only once our prompt has left the queue: it is ours then,
        even from a server that rewrites graphs.
        """
        graph = entry.graph
        if self.graph_sha256 is None or graph is None or fingerprint(graph) == self.graph_sha256:
            return True
        held = self.prompt_id in self.client.queue()
        if held and not self._stale_seen:
            self._stale_seen = True
            log.warning("comfy.stale_history_entry", prompt_id=self.prompt_id)
        return not held

    def _deadline(self) -> float:
        if self._started_at is not None:
            return self._started_at + self.policy.timeout_s
        pending = self.policy.pending_timeout_s or self.policy.timeout_s
        return self._began + pending

    def _check_abort_and_deadline(self, now: float) -> None:
        if self.policy.abort.is_set():
            state = self.cancel()
            raise WorkerShuttingDownError(
                f"worker shut down while prompt {self.prompt_id} ran; it was {state}",
                prompt_id=self.prompt_id,
            )
        hand_back = self.policy.hand_back
        if hand_back is not None and hand_back.is_set() and self._started_at is None:
            self._hand_back()
        if now >= self._deadline():
            state = self.cancel()
            limit = self.policy.timeout_s if self._started_at else self._deadline() - self._began
            raise ExecutionTimeoutError(
                f"prompt {self.prompt_id} did not finish within {limit:g}s "
                f"(COMFYUI_HISTORY_TIMEOUT_SEC); it was {state}",
                prompt_id=self.prompt_id,
                timeout_s=limit,
                cancelled=state,
            )

    def _hand_back(self) -> None:
        """Draining: dequeue a prompt that has not started; one that just started goes on."""
        try:
            dequeued = dequeue(self.client, self.prompt_id)
        except TechnicalError as exc:
            log.warning("comfy.hand_back_failed", error=exc.name, message=exc.message)
            return
        if dequeued:
            raise WorkerShuttingDownError(
                f"worker is shutting down; prompt {self.prompt_id} had not started and was "
                "taken off ComfyUI's queue, so the task goes back to LittleHorse",
                prompt_id=self.prompt_id,
            )
        self._started_at = time.monotonic()  # it started meanwhile: let it finish

    def _tick(self) -> None:
        """Liveness (is the prompt still known, has it started?) and the caller's stop check."""
        state = self._ride_out(lambda: self.client.prompt_state(self.prompt_id))
        if state == "running" and self._started_at is None:
            self._started_at = time.monotonic()
        if state is not _FAILED_CALL:
            self._count_missing(state is not None)
        stop = self.policy.stop
        reason = stop() if stop is not None else None
        if reason is not None:
            state = self.cancel()
            log.info("comfy.wait_stopped", reason=reason.name, cancelled=state)
            raise reason

    def _count_missing(self, known: bool) -> None:
        """Count ticks on which the prompt is neither queued, running nor finished."""
        if known:
            self._missing_ticks = 0
            return
        self._missing_ticks += 1
        log.warning("comfy.prompt_missing", missing_ticks=self._missing_ticks)
        if self._missing_ticks >= VANISHED_AFTER_TICKS:
            raise PromptVanishedError(
                f"prompt {self.prompt_id} is in neither ComfyUI's queue nor its history "
                f"(checked {self._missing_ticks} times): ComfyUI probably restarted",
                prompt_id=self.prompt_id,
            )

    def _ride_out(self, call: Callable[[], Any]) -> Any:
        """Run ``call``; a technical failure is logged and read as "no news"."""
        try:
            return call()
        except TechnicalError as exc:
            log.warning("comfy.wait_transient_error", error=exc.name, message=exc.message)
            return _FAILED_CALL

    def _let_events_arrive(self) -> None:
        """If /history won the race with the socket, give its last events a moment."""
        if not self.watch.terminal_seen and self.watch.connected():
            self.watch.wait_terminal(EVENTS_GRACE_S)

    def cancel(self) -> str:
        """Free the GPU for the prompt waited on; never raises."""
        return cancel_quietly(self.client, self.prompt_id)


def cancel_quietly(client: ComfyClient, prompt_id: str) -> str:
    """``cancel`` that never raises (ComfyUI may be the reason we are cancelling)."""
    try:
        return cancel(client, prompt_id)
    except TechnicalError as exc:
        log.warning("comfy.cancel_failed", error=exc.name, message=exc.message)
        return f"not cancelled ({exc.name}: ComfyUI may still run it)"


def dequeue(client: ComfyClient, prompt_id: str) -> bool:
    """Take a prompt off the queue if it has not started; True if it is gone unstarted.

    Always ``POST /queue`` delete, which never touches a running prompt (the jobs API's
    cancel would interrupt one that started a moment ago).
    """
    return prompt_id in client.queue().pending and _delete_pending(client, prompt_id)


def _delete_pending(client: ComfyClient, prompt_id: str) -> bool:
    """Delete a pending prompt; True if it is gone without having started meanwhile."""
    client.delete_pending([prompt_id])
    queue = client.queue()
    return prompt_id not in queue.running and prompt_id not in queue.pending


def cancel(client: ComfyClient, prompt_id: str) -> str:
    """Free the GPU: delete the prompt if pending, interrupt it if running."""
    if client.info.jobs_api:
        return _cancel_job(client, prompt_id)
    queue = client.queue()
    if prompt_id not in queue:
        return "no longer queued"
    if prompt_id in queue.pending and _delete_pending(client, prompt_id):
        log.info("comfy.prompt_deleted", prompt_id=prompt_id)
        return "deleted from the queue"
    client.interrupt(prompt_id)
    log.info("comfy.prompt_interrupted", prompt_id=prompt_id)
    return "interrupted"


def _cancel_job(client: ComfyClient, prompt_id: str) -> str:
    """The jobs API: one atomic call interrupts a running job or dequeues a pending one."""
    status = client.job_status(prompt_id)
    if status not in ("pending", "in_progress"):
        return "no longer queued"
    client.cancel_job(prompt_id)
    log.info("comfy.prompt_cancelled", prompt_id=prompt_id, was=status)
    return "interrupted" if status == "in_progress" else "deleted from the queue"


def outcome(prompt_id: str, entry: HistoryEntry) -> HistoryEntry:
    """Return a successful entry; raise the matching error for a failed one."""
    if entry.succeeded:
        return entry
    messages = entry.messages
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


def _execution_error(prompt_id: str, data: dict[str, Any]) -> ComfyWorkerError:
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
    if is_out_of_memory(details):
        return ComfyOutOfMemoryError(f"ComfyUI ran out of memory: {text}", **details)
    return ExecutionFailedError(text, **details)


def is_out_of_memory(details: dict[str, Any]) -> bool:
    """Torch's OutOfMemoryError, or a CUDA/HIP/MPS allocation failure in the message."""
    kind = str(details.get("exception_type") or "")
    message = str(details.get("exception_message") or "").lower()
    return "OutOfMemory" in kind or "out of memory" in message or "allocation on device" in message
