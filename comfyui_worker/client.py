"""Blocking ComfyUI HTTP client: the one place where HTTP becomes our errors.

Connection errors, timeouts and 5xx are retried with exponential backoff and jitter
(stamina); 4xx are not. Every method raises only ``errors.ComfyWorkerError``
subclasses, so callers never see httpx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import stamina

from comfyui_worker.errors import (
    ComfyRequestError,
    ComfyServerError,
    ComfyUnavailableError,
    InvalidWorkflowError,
)
from comfyui_worker.settings import ComfySettings

Graph = dict[str, Any]
RETRIED = (ComfyUnavailableError, ComfyServerError)
CHUNK_BYTES = 1024 * 1024  # bigger chunks measured no faster here


@dataclass(frozen=True)
class QueueSnapshot:
    """Prompt ids ComfyUI is running and holding, in queue order."""

    running: list[str]
    pending: list[str]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


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
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=settings.request_headers(),
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

    def retrying(self) -> Any:
        """The retry policy for transient failures, for callers that retry a unit of work."""
        return stamina.retry_context(
            on=RETRIED,
            attempts=self.settings.http_retries + 1,
            timeout=None,
            wait_initial=0.2,
            wait_max=5.0,
            wait_jitter=0.5,
        )

    # --- prompts -----------------------------------------------------------------

    def submit_once(self, graph: Graph, *, prompt_id: str, client_id: str) -> int:
        """POST /prompt exactly once (never retried here: a lost answer may mean queued).

        Returns ComfyUI's queue number. A 400 becomes InvalidWorkflowError listing every
        failing node.
        """
        body = {"prompt": graph, "prompt_id": prompt_id, "client_id": client_id}
        response = self._send_once("POST", "/prompt", json=body)
        if response.status_code == 400:
            raise _rejected(_json_or_text(response))
        payload = self._json(self._checked(response))
        return int(payload.get("number", -1))

    def queue(self) -> QueueSnapshot:
        """GET /queue: which prompts are running and pending."""
        payload = self._get_json("/queue")
        return QueueSnapshot(
            running=[str(item[1]) for item in payload.get("queue_running", [])],
            pending=[str(item[1]) for item in payload.get("queue_pending", [])],
        )

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """GET /history/{id}: the entry once the prompt finished, else None."""
        payload = self._get_json(f"/history/{prompt_id}")
        entry = payload.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def knows(self, prompt_id: str) -> bool:
        """Whether ComfyUI holds the prompt: queued, running or in its history.

        The queue is read first: a prompt can finish between the two reads, never the
        other way round.
        """
        return prompt_id in self.queue() or self.history(prompt_id) is not None

    def interrupt(self, prompt_id: str) -> None:
        """POST /interrupt for this prompt only (a no-op unless it is running)."""
        self._send("POST", "/interrupt", json={"prompt_id": prompt_id})

    def delete_pending(self, prompt_ids: list[str]) -> None:
        """POST /queue delete: drop prompts that have not started."""
        self._send("POST", "/queue", json={"delete": prompt_ids})

    # --- server facts ------------------------------------------------------------

    def system_stats(self) -> dict[str, Any]:
        """GET /system_stats: version, devices, memory."""
        return self._get_json("/system_stats")

    def ping(self, timeout_s: float = 2.0) -> None:
        """One quick GET /system_stats with no retries, for readiness probes."""
        self._checked(self._send_once("GET", "/system_stats", timeout=timeout_s))

    def version(self) -> str:
        """ComfyUI's version string, or "unknown" if it does not say."""
        system = self.system_stats().get("system", {})
        return str(system.get("comfyui_version", "unknown"))

    def object_info(self) -> dict[str, Any]:
        """GET /object_info: every node type with its input definitions."""
        return self._get_json("/object_info")

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
        try:
            with self._http.stream("GET", "/view", params=params) as response:
                if response.status_code >= 400:
                    response.read()
                self._checked(response)
                length = response.headers.get("content-length")
                yield ViewStream(
                    content_type=response.headers.get("content-type"),
                    content_length=int(length) if length and length.isdigit() else None,
                    chunks=_mapped(response.iter_bytes(CHUNK_BYTES), self.base_url),
                )
        except httpx.TransportError as exc:
            raise _unavailable(exc, self.base_url) from exc

    # --- plumbing: every request goes through here -------------------------------

    def _get_json(self, path: str) -> dict[str, Any]:
        return self._json(self._send("GET", path))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request with retries on transient failures; errors mapped."""
        for attempt in self.retrying():
            with attempt:
                return self._checked(self._send_once(method, path, **kwargs))
        raise AssertionError("unreachable: stamina re-raises the last error")

    def _send_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unavailable(exc, self.base_url) from exc

    def _checked(self, response: httpx.Response) -> httpx.Response:
        """Map an HTTP status to our errors; return the response if it is a success."""
        status = response.status_code
        where = f"{response.request.method} {response.request.url.path}"
        if status >= 500:
            raise ComfyServerError(
                f"ComfyUI answered {status} to {where}: {_snippet(response)}",
                status=status,
                url=self.base_url,
            )
        if status >= 400:
            raise ComfyRequestError(
                f"ComfyUI answered {status} to {where}: {_snippet(response)}",
                status=status,
                url=self.base_url,
            )
        return response

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


def _mapped(chunks: Iterator[bytes], base_url: str) -> Iterator[bytes]:
    """Re-raise mid-stream transport errors as our own, so the download is retried."""
    try:
        yield from chunks
    except httpx.TransportError as exc:
        raise _unavailable(exc, base_url) from exc


def _unavailable(exc: httpx.TransportError, base_url: str) -> ComfyUnavailableError:
    kind = type(exc).__name__
    return ComfyUnavailableError(
        f"ComfyUI at {base_url} is unreachable ({kind}: {exc or 'no detail'})",
        url=base_url,
        cause=kind,
    )


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
    lines += [
        f"node {n['node_id']} ({n['class_type']}): {n['message']}"
        + (f": {n['details']}" if n["details"] else "")
        for n in nodes
    ]
    return InvalidWorkflowError(
        "\n  ".join(lines), comfy_error_type=error.get("type"), node_errors=nodes
    )


def _node_errors(raw: Any) -> list[dict[str, Any]]:
    """Flatten ComfyUI's ``node_errors`` into one dict per failing input."""
    if not isinstance(raw, dict):
        return []
    flat: list[dict[str, Any]] = []
    for node_id, node in raw.items():
        for err in node.get("errors", []) if isinstance(node, dict) else []:
            extra = err.get("extra_info") or {}
            flat.append(
                {
                    "node_id": str(node_id),
                    "class_type": node.get("class_type", "?"),
                    "type": err.get("type"),
                    "message": err.get("message", ""),
                    "details": err.get("details", ""),
                    "input_name": extra.get("input_name") if isinstance(extra, dict) else None,
                }
            )
    return flat
