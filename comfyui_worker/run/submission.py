"""Queue a prompt on ComfyUI exactly once: inputs, preflight, then POST /prompt.

ComfyUI queues a duplicate prompt id without complaint, so a POST whose answer was lost
is never blindly resent: whether the request may have been delivered is decided where
errors are made (``maybe_delivered``: a timeout, a cut connection, a proxy's 504), and
such a prompt is looked for in the queue and history, with patience for a slow server,
before any new try.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

from comfyui_worker.comfy.client import RETRIED, ComfyClient
from comfyui_worker.comfy.events import EventStream
from comfyui_worker.errors import TechnicalError
from comfyui_worker.run.fencing import Fence
from comfyui_worker.settings import ComfySettings
from comfyui_worker.transport import Deadline
from comfyui_worker.workflow.preflight import ObjectInfoCache
from comfyui_worker.workflow.request import RunRequest

log = structlog.get_logger("comfyui_worker.run.submission")


@dataclass
class Clock:
    """Wall and monotonic marks for the result's timings."""

    start: float = field(default_factory=time.monotonic)
    submitted_wall_ms: float = field(default_factory=lambda: time.time() * 1000)
    submitted: float = 0.0
    detected: float = 0.0
    downloaded: float = 0.0


class Submitter:
    """Submits requests to the worker's own ComfyUI."""

    def __init__(self, settings: ComfySettings, client: ComfyClient, events: EventStream) -> None:
        self.settings = settings
        self.client = client
        self.events = events
        self.object_info = ObjectInfoCache(client.object_info)
        self._socket_waited = False

    def submit(
        self, request: RunRequest, clock: Clock, fence: Fence, *, queued_behind: int = 0
    ) -> None:
        """Upload inputs, preflight, record the submission, then POST /prompt exactly once.

        The record (a LittleHorse checkpoint, which fences a stale attempt) is the last
        step before the POST, so as little as possible happens between the two; it says
        how many of the worker's own prompts this one will wait behind (prefetch).
        """
        for upload in request.uploads:
            self.client.upload_image(upload.upload_name, upload.data, upload.content_type)
        if self.settings.preflight:
            self.object_info.check(request.graph, [u.upload_name for u in request.uploads])
        if not self._socket_waited:  # once, at start: let the socket open so events reach us
            self._socket_waited = True
            self.events.wait_connected(min(2.0, self.settings.http_timeout_s))
        fence.record(
            self.settings.advertised_url, request.prompt_id, request.graph_sha256, queued_behind
        )
        clock.submitted_wall_ms = time.time() * 1000
        deadline = self.client.deadline()
        for attempt in self.client.retrying(deadline):
            with attempt:
                self._submit_once(request, deadline)
        clock.submitted = time.monotonic()
        log.info("comfy.prompt_queued", prompt_id=request.prompt_id)

    def _submit_once(self, request: RunRequest, deadline: Deadline) -> None:
        try:
            self.client.submit_once(
                request.graph, prompt_id=request.prompt_id, client_id=self.events.client_id
            )
        except RETRIED as exc:
            if not self._was_queued(request.prompt_id, self._patience_s(exc, deadline)):
                raise

    def _patience_s(self, exc: TechnicalError, deadline: Deadline) -> float:
        """How long a prompt whose answer went missing might still take to be filed.

        A timeout or a cut connection (or a proxy's 504) may hide a request ComfyUI
        is still processing; a refused connection or ComfyUI's own 500 does not.
        """
        if not exc.maybe_delivered:
            return 0.0
        return min(self.settings.http_timeout_s, deadline.remaining_s())

    def _was_queued(self, prompt_id: str, patience_s: float) -> bool:
        """Whether ComfyUI holds the prompt, giving a slow server ``patience_s`` to file it."""
        ends = time.monotonic() + patience_s
        while True:
            try:
                if self.client.knows(prompt_id):
                    log.warning("comfy.submit_answer_lost", prompt_id=prompt_id)
                    return True
            except TechnicalError:
                pass  # still unreachable: keep looking until patience runs out
            if time.monotonic() >= ends:
                return False
            time.sleep(min(0.25, patience_s))
