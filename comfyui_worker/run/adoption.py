"""Find a task's prompt from an earlier attempt, here or on a peer ComfyUI, instead of rerunning it.

A prompt still queued or running is waited for; one that succeeded is downloaded; one
that failed, was interrupted or vanished is ignored, except the current attempt's own
id, whose failure is this attempt's result. A prompt is adopted only if ComfyUI holds
the very graph its record names (a fingerprint), never an older job's under the same
id. Submissions an earlier attempt recorded on another worker's ComfyUI
(``fencing.Submission``) are looked for there, over HTTP and WebSocket like the
worker's own ComfyUI, when that server answers.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import structlog
from pydantic import AnyHttpUrl

from comfyui_worker.comfy.client import ComfyClient, ServerInfo
from comfyui_worker.comfy.events import EventStream
from comfyui_worker.comfy.waiting import Finished, outcome
from comfyui_worker.errors import TechnicalError
from comfyui_worker.run.fencing import Submission
from comfyui_worker.settings import ComfySettings
from comfyui_worker.workflow.graph import fingerprint

log = structlog.get_logger("comfyui_worker.run.adoption")


@dataclass(frozen=True)
class Server:
    """One ComfyUI the worker talks to: its client (which knows what it is), its WebSocket."""

    client: ComfyClient
    events: EventStream
    owned: bool = False  # a peer opened for one task, closed after it

    @property
    def info(self) -> ServerInfo:
        """What the client last learned of this server (``UNKNOWN_SERVER`` until then)."""
        return self.client.info

    @property
    def base_url(self) -> str:
        """The server's URL, credentials redacted."""
        return self.client.base_url

    def close(self) -> None:
        """Close a peer's connections (the worker's own server stays open)."""
        if self.owned:
            self.events.close()
            self.client.close()


@dataclass(frozen=True)
class Candidate:
    """A prompt an attempt submitted, and the fingerprint of the graph it submitted."""

    prompt_id: str
    graph_sha256: str | None  # None: a record without one, which cannot be verified


@dataclass(frozen=True)
class Adopted:
    """An earlier prompt to wait for (``finished`` None) or to download."""

    server: Server
    candidate: Candidate
    finished: Finished | None

    @property
    def prompt_id(self) -> str:
        """The adopted prompt's id."""
        return self.candidate.prompt_id


def find(
    client: ComfyClient, candidates: list[Candidate], current: str
) -> tuple[Candidate, Finished | None] | None:
    """The newest candidate ComfyUI still holds, with its own graph, worth adopting."""
    queue = client.queue()
    for candidate in reversed(candidates):
        prompt_id = candidate.prompt_id
        if prompt_id in queue:
            if _holds(queue.graphs.get(prompt_id), candidate):
                log.info("comfy.prompt_adopted", adopted_prompt_id=prompt_id, state="queued")
                return candidate, None
            continue
        entry = client.history(prompt_id)
        if entry is None or not _holds(entry.graph, candidate):
            continue
        if prompt_id == current or entry.succeeded:
            log.info("comfy.prompt_adopted", adopted_prompt_id=prompt_id, state="finished")
            return candidate, Finished(outcome(prompt_id, entry), time.monotonic())
    return None


def _holds(graph: object | None, candidate: Candidate) -> bool:
    """Whether ComfyUI holds the very graph the candidate recorded under its id.

    Anything else under that id (an older job's prompt, a record without a
    fingerprint) is never adopted: its outputs would be another job's.
    """
    ours = graph is not None and candidate.graph_sha256 == fingerprint(graph)
    if not ours:
        log.warning("comfy.adoption_refused", adopted_prompt_id=candidate.prompt_id)
    return ours


def on_peers(settings: ComfySettings, earlier: list[Submission], own_url: str) -> Adopted | None:
    """Look for earlier submissions on other ComfyUIs, newest first; adopt the first found."""
    by_url: dict[str, list[Candidate]] = {}
    for submission in earlier:
        if submission.comfyui_url != own_url:
            by_url.setdefault(submission.comfyui_url, []).append(candidate_of(submission))
    for url in reversed(list(by_url)):
        adopted = _on_peer(settings, url, by_url[url])
        if adopted is not None:
            return adopted
    return None


def candidate_of(submission: Submission) -> Candidate:
    """What a recorded submission says to look for."""
    return Candidate(submission.prompt_id, submission.graph_sha256)


def _on_peer(settings: ComfySettings, url: str, candidates: list[Candidate]) -> Adopted | None:
    """Adopt on one peer if it answers and still holds one of the prompts; else None."""
    peer_settings = settings.model_copy(update={"base_url": AnyHttpUrl(url)})
    client = ComfyClient(peer_settings)
    try:
        client.ping()  # one quick try: an unreachable peer means submitting here
        found = find(client, candidates, current="")
    except TechnicalError as exc:
        log.warning("comfy.peer_unreachable", peer=url, error=exc.name, message=exc.message)
        found = None
    if found is None:
        client.close()
        return None
    log.info("comfy.prompt_adopted_on_peer", peer=url, adopted_prompt_id=found[0].prompt_id)
    return Adopted(_peer(peer_settings, client), found[0], found[1])


def _peer(settings: ComfySettings, client: ComfyClient) -> Server:
    """A peer to wait on and download from, with this worker's auth headers."""
    with contextlib.suppress(TechnicalError):  # unlearned, it is served by the legacy routes
        client.server_info()
    return Server(client, EventStream(settings).start(), owned=True)
