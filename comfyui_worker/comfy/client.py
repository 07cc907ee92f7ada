"""Blocking ComfyUI HTTP client: ComfyUI's REST API as typed, retried method calls.

Transport errors are mapped by ``transport.py``; HTTP statuses become our errors in
``_checked``, here and nowhere else. Connection errors, timeouts and 5xx are retried
with exponential backoff and jitter (stamina) within an overall deadline per call
(``COMFYUI_HTTP_DEADLINE_SEC``); 4xx are not retried. Callers never see httpx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from comfyui_worker.bounds import capped
from comfyui_worker.comfy.history import HistoryEntry
from comfyui_worker.errors import (
    ComfyRequestError,
    ComfyServerError,
    ComfyUnavailableError,
    InvalidWorkflowError,
)
from comfyui_worker.settings import ComfySettings
from comfyui_worker.transport import Deadline, mapped, mapped_chunks

Graph = dict[str, Any]
RETRIED = (ComfyUnavailableError, ComfyServerError)
GATEWAY_TIMEOUT = 504  # a proxy gave up waiting: ComfyUI may still act on the request
NOT_FOUND = 404
CHUNK_BYTES = 1024 * 1024  # bigger chunks measured no faster here
SERVICE = "ComfyUI"


@dataclass(frozen=True)
class QueueSnapshot:
    """Prompt ids ComfyUI is running and holding, in queue order, and their graphs."""

    running: list[str]
    pending: list[str]
    graphs: Mapping[str, object] = field(default_factory=dict)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


@dataclass(frozen=True)
class ServerInfo:
    """What the worker learns about its ComfyUI once at start (and on reconnect)."""

    version: str
    jobs_api: bool  # GET /api/jobs/{id} and POST /api/jobs/{id}/cancel (2026 releases)


UNKNOWN_SERVER = ServerInfo(version="unknown", jobs_api=False)


@dataclass(frozen=True)
class ViewStream:
    """An open /view response; iterate ``chunks`` to read the file."""

    content_type: str | None
    content_length: int | None
    chunks: Iterator[bytes]


class ComfyClient:
    """ComfyUI's REST API as typed, retried, error-mapped method calls."""

    def __init__(
        self, settings: ComfySettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.base_url = settings.base_url_str
        self.info = UNKNOWN_SERVER  # server_info() learns it; with jobs_api, /api/jobs is used
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=settings.request_headers(),
            auth=settings.basic_auth(),
            timeout=settings.http_timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    def __enter__(self) -> ComfyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def deadline(self) -> Deadline:
        """The overall deadline of one call, retries included (COMFYUI_HTTP_DEADLINE_SEC)."""
        return Deadline(self.settings.http_deadline_s)

    def retrying(self, deadline: Deadline | None = None) -> Any:
        """Tries of one unit of work: transient failures retried, within ``deadline`` if given."""
        deadline = deadline or Deadline(float("inf"))
        return deadline.retrying(RETRIED, self.settings.http_retries + 1)

    # --- prompts -----------------------------------------------------------------

    def submit_once(self, graph: Graph, *, prompt_id: str, client_id: str) -> int:
        """POST /prompt exactly once (never retried here: a lost answer may mean queued).

        Returns ComfyUI's queue number. A 400 becomes InvalidWorkflowError listing every
        failing node.
        """
        body = {"prompt": graph, "prompt_id": prompt_id, "client_id": client_id}
        payload = self._json(self._checked(self._send_once("POST", "/prompt", json=body)))
        return int(payload.get("number", -1))

    def queue(self) -> QueueSnapshot:
        """GET /queue: which prompts are running and pending."""
        payload = self._get_json("/queue")
        running, pending = payload.get("queue_running"), payload.get("queue_pending")
        return QueueSnapshot(
            running=_ids(running), pending=_ids(pending), graphs=_graphs(running, pending)
        )

    def history(self, prompt_id: str) -> HistoryEntry | None:
        """GET /history/{id}: the entry once the prompt finished, else None."""
        payload = self._get_json(f"/history/{prompt_id}")
        entry = payload.get(prompt_id)
        return HistoryEntry.parse(entry) if isinstance(entry, dict) else None

    def knows(self, prompt_id: str) -> bool:
        """Whether ComfyUI holds the prompt: queued, running or in its history."""
        return self.prompt_state(prompt_id) is not None

    def prompt_state(self, prompt_id: str) -> str | None:
        """``running``, ``pending`` or ``finished``; None if ComfyUI does not hold the prompt.

        One jobs-API call where the server has it; else the queue is read first: a
        prompt can finish between the two reads, never the other way round.
        """
        if self.info.jobs_api:
            status = self.job_status(prompt_id)
            states = {"pending": "pending", "in_progress": "running", None: None}
            return states.get(status, "finished")
        queue = self.queue()
        if prompt_id in queue.running:
            return "running"
        if prompt_id in queue.pending:
            return "pending"
        return "finished" if self.history(prompt_id) is not None else None

    def job_status(self, prompt_id: str) -> str | None:
        """GET /api/jobs/{id}: pending, in_progress, completed, failed, cancelled; None: unknown."""
        try:
            job = self._get_json(f"/api/jobs/{prompt_id}")
        except ComfyRequestError as exc:  # a 4xx is never retried
            if exc.details.get("status") == NOT_FOUND:
                return None
            raise
        return str(job.get("status", "unknown"))

    def interrupt(self, prompt_id: str) -> None:
        """POST /interrupt for this prompt only (a no-op unless it is running)."""
        self._send("POST", "/interrupt", json={"prompt_id": prompt_id})

    def delete_pending(self, prompt_ids: list[str]) -> None:
        """POST /queue delete: drop prompts that have not started."""
        self._send("POST", "/queue", json={"delete": prompt_ids})

    def cancel_job(self, prompt_id: str) -> None:
        """POST /api/jobs/{id}/cancel: interrupt if running, dequeue if pending, atomically."""
        self._send("POST", f"/api/jobs/{prompt_id}/cancel")

    def free_memory(self) -> None:
        """POST /free: unload models and free cached memory (after an out-of-memory)."""
        self._send("POST", "/free", json={"unload_models": True, "free_memory": True})

    # --- server facts ------------------------------------------------------------

    def system_stats(self) -> dict[str, Any]:
        """GET /system_stats: version, devices, memory."""
        return self._get_json("/system_stats")

    def ping(self, timeout_s: float = 2.0) -> None:
        """One quick GET /system_stats with no retries, for readiness probes."""
        self._checked(self._send_once("GET", "/system_stats", timeout=timeout_s))

    def server_info(self) -> ServerInfo:
        """Learn ComfyUI's version, and whether it serves the jobs API (never assumed)."""
        system = self.system_stats().get("system", {})
        version = str(system.get("comfyui_version", "unknown"))
        self.info = ServerInfo(version=version, jobs_api=self.has_jobs_api())
        return self.info

    def has_jobs_api(self) -> bool:
        """Probe ``GET /api/jobs/{unknown id}``: the route answers JSON, an old server 404s."""
        response = self._send_once("GET", "/api/jobs/00000000-0000-4000-8000-000000000000")
        try:
            return isinstance(response.json(), dict)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False

    def object_info(self) -> dict[str, Any]:
        """GET /object_info: every node type with its input definitions."""
        return self._get_json("/object_info")

    def models(self, folder: str) -> list[str] | None:
        """GET /models/{folder}: the files ComfyUI finds there; None if it has no such folder."""
        try:
            listed = self._json_any(self._send("GET", f"/models/{folder}"))
        except ComfyRequestError as exc:  # an older ComfyUI, or a folder it does not know
            if exc.details.get("status") == NOT_FOUND:
                return None
            raise
        return [str(name) for name in listed] if isinstance(listed, list) else None

    # --- files -------------------------------------------------------------------

    def upload_image(self, upload_name: str, data: bytes, content_type: str) -> str:
        """POST /upload/image; returns the name LoadImage nodes must use."""
        files = {"image": (upload_name, data, content_type)}
        response = self._send("POST", "/upload/image", files=files, data={"overwrite": "true"})
        payload = self._json(response)
        name = str(payload.get("name", upload_name))
        subfolder = str(payload.get("subfolder", ""))
        return f"{subfolder}/{name}" if subfolder else name

    @contextmanager
    def view(self, filename: str, subfolder: str, kind: str) -> Iterator[ViewStream]:
        """GET /view streamed, once (callers retry the whole download with ``retrying``)."""
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        with (
            self._mapped(),
            self._http.stream("GET", "/view", params=params) as response,
        ):
            if response.status_code >= 400:
                response.read()
            self._checked(response)
            length = response.headers.get("content-length")
            yield ViewStream(
                content_type=response.headers.get("content-type"),
                content_length=int(length) if length and length.isdigit() else None,
                chunks=mapped_chunks(
                    response.iter_bytes(CHUNK_BYTES),
                    service=SERVICE,
                    url=self.base_url,
                    kind=ComfyUnavailableError,
                ),
            )

    # --- plumbing: every request goes through here -------------------------------

    def _get_json(self, path: str) -> dict[str, Any]:
        return self._json(self._send("GET", path))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call: tries within the overall deadline, retried on transient failures."""
        deadline = self.deadline()
        for attempt in self.retrying(deadline):
            with attempt:
                timeout = deadline.try_timeout(self.settings.http_timeout_s)
                return self._checked(self._send_once(method, path, timeout=timeout, **kwargs))
        raise AssertionError("unreachable: stamina re-raises the last error")

    def _send_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._mapped():
            return self._http.request(method, path, **kwargs)

    def _mapped(self) -> Any:
        return mapped(service=SERVICE, url=self.base_url, kind=ComfyUnavailableError)

    def _checked(self, response: httpx.Response) -> httpx.Response:
        """Map an HTTP status to our errors; return the response if it is a success."""
        status = response.status_code
        if status < 400:
            return response
        where = f"{response.request.method} {response.request.url.path}"
        if status == 400 and where == "POST /prompt":  # ComfyUI validated the graph
            raise _rejected(_json_or_text(response))
        message = f"ComfyUI answered {status} to {where}: {_snippet(response)}"
        if status >= 500:
            raise ComfyServerError(
                message,
                maybe_delivered=status == GATEWAY_TIMEOUT,
                status=status,
                url=self.base_url,
                request=where,
            )
        raise ComfyRequestError(message, status=status, url=self.base_url, request=where)

    def _json_any(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            raise ComfyServerError(
                f"{self.base_url}{response.request.url.path} did not answer a JSON object: "
                f"{_snippet(response)} (is COMFYUI_BASE_URL really ComfyUI?)",
                url=self.base_url,
            )
        return payload


def _ids(items: Any) -> list[str]:
    """Prompt ids from a queue list of ``[number, prompt_id, ...]`` entries."""
    if not isinstance(items, list):
        return []
    return [str(item[1]) for item in items if isinstance(item, list) and len(item) > 1]


def _graphs(*lists: Any) -> dict[str, object]:
    """Each queued prompt's graph, from its ``[number, prompt_id, graph, ...]`` entry."""
    return {
        str(item[1]): item[2]
        for items in lists
        if isinstance(items, list)
        for item in items
        if isinstance(item, list) and len(item) > 2
    }


def _snippet(response: httpx.Response, limit: int = 300) -> str:
    try:
        text = response.text
    except (httpx.ResponseNotRead, UnicodeDecodeError):
        return "(body not read)"
    return " ".join(text.split())[:limit] or "(empty body)"


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


def _rejected(body: Any) -> InvalidWorkflowError:
    """Turn ComfyUI's 400 body into one readable error that lists each failing node."""
    if not isinstance(body, dict):
        return InvalidWorkflowError(f"ComfyUI rejected the workflow: {body!s:.300}")
    raw_error = body.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    head = str(error.get("message") or "ComfyUI rejected the workflow")
    if error.get("details") and not body.get("node_errors"):
        head = f"{head} ({error['details']})"
    nodes = _node_errors(body.get("node_errors"))
    lines = [f"ComfyUI rejected the workflow: {head}"]
    lines += capped(
        f"node {n['node_id']} ({n['class_type']}): {n['message']}"
        + (f": {n['details']}" if n["details"] else "")
        for n in nodes
    )
    return InvalidWorkflowError(
        "\n  ".join(lines), comfy_error_type=error.get("type"), node_errors=nodes
    )


def _node_errors(raw: Any) -> list[dict[str, Any]]:
    """Flatten ComfyUI's ``node_errors`` into one dict per failing input."""
    if not isinstance(raw, dict):
        return []
    flat: list[dict[str, Any]] = []
    for node_id, node in raw.items():
        errors = node.get("errors") if isinstance(node, dict) else None
        for err in errors if isinstance(errors, list) else []:
            if not isinstance(err, dict):
                continue
            extra = err.get("extra_info")
            flat.append(
                {
                    "node_id": str(node_id),
                    "class_type": str(node.get("class_type", "?")),
                    "type": err.get("type"),
                    "message": str(err.get("message", "")),
                    "details": str(err.get("details", "")),
                    "input_name": extra.get("input_name") if isinstance(extra, dict) else None,
                }
            )
    return flat
