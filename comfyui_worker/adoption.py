"""Find a task's prompt from an earlier attempt, here or on a peer ComfyUI, instead of rerunning it.

A prompt still queued or running is waited for; one that succeeded is downloaded; one
that failed, was interrupted or vanished is ignored, except the current attempt's own
id, whose failure is this attempt's result. Submissions an earlier attempt recorded on
another worker's ComfyUI (``fencing.Submission``) are looked for there, over HTTP and
WebSocket like the worker's own ComfyUI, when that server answers.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import structlog
from pydantic import AnyHttpUrl

from comfyui_worker.client import ComfyClient, ServerInfo
from comfyui_worker.errors import TechnicalError
from comfyui_worker.events import EventStream
from comfyui_worker.fencing import Submission
from comfyui_worker.settings import ComfySettings
from comfyui_worker.waiting import Finished, outcome, succeeded

log = structlog.get_logger("comfyui_worker.adoption")


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
class Adopted:
    """An earlier prompt to wait for (``finished`` None) or to download."""

    server: Server
    prompt_id: str
    finished: Finished | None


def find(
    client: ComfyClient, candidates: list[str], current: str
) -> tuple[str, Finished | None] | None:
    """The newest candidate ComfyUI still holds and that is worth adopting."""
    queue = client.queue()
    for prompt_id in reversed(candidates):
        if prompt_id in queue:
            log.info("comfy.prompt_adopted", adopted_prompt_id=prompt_id, state="queued")
            return prompt_id, None
        entry = client.history(prompt_id)
        if entry is None:
            continue
        if prompt_id == current or succeeded(entry):
            log.info("comfy.prompt_adopted", adopted_prompt_id=prompt_id, state="finished")
            return prompt_id, Finished(outcome(prompt_id, entry), time.monotonic())
    return None


def on_peers(settings: ComfySettings, earlier: list[Submission], own_url: str) -> Adopted | None:
    """Look for earlier submissions on other ComfyUIs, newest first; adopt the first found."""
    by_url: dict[str, list[str]] = {}
    for submission in earlier:
        if submission.comfyui_url != own_url:
            by_url.setdefault(submission.comfyui_url, []).append(submission.prompt_id)
    for url in reversed(list(by_url)):
        adopted = _on_peer(settings, url, by_url[url])
        if adopted is not None:
            return adopted
    return None


def _on_peer(settings: ComfySettings, url: str, prompt_ids: list[str]) -> Adopted | None:
    """Adopt on one peer if it answers and still holds one of the prompts; else None."""
    peer_settings = settings.model_copy(update={"base_url": AnyHttpUrl(url)})
    client = ComfyClient(peer_settings)
    try:
        client.ping()  # one quick try: an unreachable peer means submitting here
        found = find(client, prompt_ids, current="")
    except TechnicalError as exc:
        log.warning("comfy.peer_unreachable", peer=url, error=exc.name, message=exc.message)
        found = None
    if found is None:
        client.close()
        return None
    log.info("comfy.prompt_adopted_on_peer", peer=url, adopted_prompt_id=found[0])
    return Adopted(_peer(peer_settings, client), found[0], found[1])


def _peer(settings: ComfySettings, client: ComfyClient) -> Server:
    """A peer to wait on and download from, with this worker's auth headers."""
    with contextlib.suppress(TechnicalError):  # unlearned, it is served by the legacy routes
        client.server_info()
    return Server(client, EventStream(settings).start(), owned=True)
