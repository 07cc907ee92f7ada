"""The checkpoint fence: an attempt records its prompt with LittleHorse before the POST.

``run.fencing.Fence`` on LittleHorse task checkpoints; LittleHorse's STOP_TASK answer
to PutCheckpoint is the fencing token that keeps a stale attempt from submitting.
"""

from __future__ import annotations

import asyncio
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
from comfyui_worker.run.fencing import Submission
from comfyui_worker.worker.ledger import Key, Ledger

log = structlog.get_logger("comfyui_worker.worker.fence")


class CheckpointFence:
    """``fencing.Fence`` on LittleHorse task checkpoints (``ctx.execute_and_checkpoint``).

    Earlier submissions are read when the task starts (on the event loop); a new one is
    recorded from the execution thread, just before the POST. STOP_TASK (seen by the
    observed stub) becomes ``AttemptFencedError``; a LittleHorse that cannot be reached
    becomes ``LittleHorseUnavailableError``: either way nothing is submitted.
    """

    RECORD_TIMEOUT_S = 30.0

    def __init__(
        self, ctx: WorkerContext, ledger: Ledger, key: Key, worker_id: str, earlier: list[Any]
    ) -> None:
        self._ctx = ctx
        self._ledger = ledger
        self._key = key
        self._worker_id = worker_id
        self._earlier = earlier
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, ctx: WorkerContext, ledger: Ledger, key: Key, worker_id: str) -> Any:
        """Read every checkpoint earlier attempts recorded (the SDK replays them in order)."""
        earlier = []
        try:
            for _ in range(ledger.observed_checkpoints(key)):
                earlier.append(await ctx.execute_and_checkpoint(_unused))
        except grpc.aio.AioRpcError as exc:
            raise lh_failure(exc, "could not read earlier submissions", key) from None
        return cls(ctx, ledger, key, worker_id, earlier)

    @property
    def earlier(self) -> list[Submission]:
        """The recorded submissions, oldest first (foreign values ignored)."""
        found = (Submission.from_json(value) for value in self._earlier)
        return [submission for submission in found if submission is not None]

    def record(self, comfyui_url: str, prompt_id: str, graph_sha256: str) -> None:
        """PutCheckpoint before the POST; blocks the execution thread until answered."""
        submission = Submission(comfyui_url, prompt_id, self._worker_id, self._key[2], graph_sha256)
        future = asyncio.run_coroutine_threadsafe(
            self._ctx.execute_and_checkpoint(lambda _context: submission.to_json()), self._loop
        )
        try:
            future.result(self.RECORD_TIMEOUT_S)
        except Exception as exc:  # the SDK raises a bare Exception for STOP_TASK
            raise self._why(exc) from None
        log.info("lh.submission_recorded", prompt_id=prompt_id)

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


def _unused(_context: Any) -> None:
    """Never called: reading a checkpoint that exists does not run the callable."""


def lh_failure(exc: grpc.RpcError, what: str, key: Key) -> LittleHorseError:
    """A checkpoint call that failed: unavailable if transient (``rpc``), else a refusal."""
    kind = LittleHorseUnavailableError if is_transient(exc) else LittleHorseError
    return kind(
        f"{what} with LittleHorse ({code_of(exc).name}); nothing was submitted",
        task_guid=key[1],
    )
