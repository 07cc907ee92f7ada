"""The checkpoint fence: an attempt records its prompt with LittleHorse before the POST.

``run.fencing.Fence`` on LittleHorse task checkpoints; LittleHorse's STOP_TASK answer
to PutCheckpoint is the fencing token that keeps a stale attempt from submitting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

import grpc
import structlog
from littlehorse.worker import WorkerContext

from comfyui_worker.errors import (
    AttemptFencedError,
    LittleHorseError,
    LittleHorseUnavailableError,
)
from comfyui_worker.lh.rpc import code_of, is_transient
from comfyui_worker.run.fencing import Started, Submission
from comfyui_worker.worker.ledger import Key, Ledger

log = structlog.get_logger("comfyui_worker.worker.fence")


class CheckpointFence:
    """``fencing.Fence`` on LittleHorse task checkpoints (``ctx.execute_and_checkpoint``).

    Earlier submissions are read when the task starts (on the event loop); a new one is
    recorded from the execution thread, just before the POST. STOP_TASK (seen by the
    observed stub) becomes ``AttemptFencedError``; a LittleHorse that cannot be reached
    becomes ``LittleHorseUnavailableError``: either way nothing is submitted. A
    prefetched prompt's start is recorded in the background (``started``).
    """

    RECORD_TIMEOUT_S = 30.0

    def __init__(
        self,
        ctx: WorkerContext,
        ledger: Ledger,
        key: Key,
        worker_id: str,
        earlier: list[Any],
        before_submit: Callable[[], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._before_submit = before_submit
        self._ledger = ledger
        self._key = key
        self._worker_id = worker_id
        self._earlier = earlier
        self._loop = asyncio.get_running_loop()
        self._prefetched: str | None = None  # our prompt queued behind others, until it starts

    @classmethod
    async def open(
        cls,
        ctx: WorkerContext,
        ledger: Ledger,
        key: Key,
        worker_id: str,
        *,
        before_submit: Callable[[], None] | None = None,
    ) -> Any:
        """Read every checkpoint earlier attempts recorded (the SDK replays them in order).

        ``before_submit`` (raising to refuse) runs beside each submission's checkpoint.
        """
        earlier = []
        try:
            for _ in range(ledger.observed_checkpoints(key)):
                earlier.append(await ctx.execute_and_checkpoint(_unused))
        except grpc.aio.AioRpcError as exc:
            raise lh_failure(exc, "could not read earlier submissions", key) from None
        return cls(ctx, ledger, key, worker_id, earlier, before_submit)

    @property
    def earlier(self) -> list[Submission]:
        """The recorded submissions, oldest first (foreign values ignored)."""
        found = (Submission.from_json(value) for value in self._earlier)
        return [submission for submission in found if submission is not None]

    def record(
        self, comfyui_url: str, prompt_id: str, graph_sha256: str, queued_behind: int = 0
    ) -> None:
        """PutCheckpoint before the POST; blocks the execution thread until answered.

        ``before_submit`` runs here meanwhile, so its round trip costs no extra time.
        """
        submission = Submission(
            comfyui_url, prompt_id, self._worker_id, self._key[2], graph_sha256, queued_behind
        )
        began = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(
            self._ctx.execute_and_checkpoint(lambda _context: submission.to_json()), self._loop
        )
        if self._before_submit is not None:
            self._before_submit()  # a refusal leaves the checkpoint to finish on its own
        try:
            future.result(self.RECORD_TIMEOUT_S)
        except Exception as exc:  # the SDK raises a bare Exception for STOP_TASK
            raise self._why(exc) from None
        if submission.prefetched:
            self._prefetched = prompt_id
        took_ms = round((time.monotonic() - began) * 1000, 2)
        log.info(
            "lh.submission_recorded",
            prompt_id=prompt_id,
            queued_behind=queued_behind,
            took_ms=took_ms,
        )

    def started(self, prompt_id: str) -> None:
        """A prefetched prompt started: one small checkpoint, sent without waiting for it.

        Only for a prompt this attempt queued behind others (prefetch off: no extra
        call). A failure is logged; the task goes on, shown as waiting a little longer.
        """
        if prompt_id != self._prefetched:
            return
        self._prefetched = None
        record = Started(prompt_id, self._key[2]).to_json()
        future = asyncio.run_coroutine_threadsafe(
            self._ctx.execute_and_checkpoint(lambda _context: record), self._loop
        )
        future.add_done_callback(partial(_log_started, prompt_id))

    def _why(self, exc: Exception) -> Exception:
        if self._key in self._ledger.fenced:
            return AttemptFencedError(
                f"LittleHorse says attempt {self._key[2]} of task {self._key[1]} is no longer "
                "current (it timed out or was superseded); nothing was submitted",
                task_guid=self._key[1],
                attempt=self._key[2],
            )
        if isinstance(exc, TimeoutError):
            return LittleHorseUnavailableError(
                "LittleHorse did not answer the checkpoint within "
                f"{self.RECORD_TIMEOUT_S:.0f}s; nothing was submitted",
                task_guid=self._key[1],
            )
        if isinstance(exc, grpc.RpcError):
            return lh_failure(exc, "could not record the submission", self._key)
        return exc


def _log_started(prompt_id: str, future: Future[Any]) -> None:
    """The started record's outcome (on the event loop: no task context bound there)."""
    exc = None if future.cancelled() else future.exception()
    if exc is None:
        log.info("lh.start_recorded", prompt_id=prompt_id)
    else:
        error, message = type(exc).__name__, str(exc)[:200]
        log.warning("lh.start_not_recorded", prompt_id=prompt_id, error=error, message=message)


def _unused(_context: Any) -> None:
    """Never called: reading a checkpoint that exists does not run the callable."""


def lh_failure(exc: grpc.RpcError, what: str, key: Key) -> LittleHorseError:
    """A checkpoint call that failed: unavailable if transient (``rpc``), else a refusal."""
    kind = LittleHorseUnavailableError if is_transient(exc) else LittleHorseError
    return kind(
        f"{what} with LittleHorse ({code_of(exc).name}); nothing was submitted",
        task_guid=key[1],
    )
