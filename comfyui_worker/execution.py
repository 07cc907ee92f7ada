"""The blocking execution loop: validate → adopt or submit → wait → download → manifest.

It runs in a thread (the LittleHorse handler calls it with ``asyncio.to_thread``)
and raises only ``errors.ComfyWorkerError`` subclasses.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from comfyui_worker import __version__
from comfyui_worker.client import ComfyClient
from comfyui_worker.errors import ComfyServerError, ComfyUnavailableError, InvalidWorkflowError
from comfyui_worker.events import EventStream, ProgressCallback
from comfyui_worker.graph import validate_graph
from comfyui_worker.images import ResolvedImage
from comfyui_worker.outputs import Downloader, bounded_text, collect, write_manifest
from comfyui_worker.preflight import preflight
from comfyui_worker.settings import ComfySettings
from comfyui_worker.waiting import Finished, outcome, wait_or_cancel

log = structlog.get_logger("comfyui_worker.execution")

Trail = Callable[[str], None]
MAX_RESULT_BYTES = 512 * 1024
IN_FLIGHT = frozenset(
    {"ReadTimeout", "WriteTimeout", "ReadError", "WriteError", "RemoteProtocolError"}
)


@dataclass(frozen=True)
class RunRequest:
    """One workflow execution: the graph, its deterministic prompt id, where files go."""

    graph: dict[str, Any]
    prompt_id: str
    run_key: str
    earlier_prompt_ids: tuple[str, ...] = ()
    uploads: Sequence[ResolvedImage] = ()
    params: dict[str, Any] = field(default_factory=dict)
    template: str | None = None


@dataclass
class _Clock:
    """Wall and monotonic marks for the result's timings."""

    start: float = field(default_factory=time.monotonic)
    submitted_wall_ms: float = field(default_factory=lambda: time.time() * 1000)
    submitted: float = 0.0
    detected: float = 0.0
    downloaded: float = 0.0


class ObjectInfoCache:
    """ComfyUI's /object_info, fetched once and refreshed when ComfyUI may have changed."""

    def __init__(self, client: ComfyClient) -> None:
        self._client = client
        self._info: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Forget the cache (ComfyUI reconnected: it may have restarted with new models)."""
        self._info = None

    def check(self, graph: dict[str, Any], uploaded: Sequence[str] = ()) -> None:
        """Preflight ``graph``; on problems refetch once, since models may have been added."""
        try:
            preflight(graph, self._get(), uploaded=uploaded)
        except InvalidWorkflowError:
            self.invalidate()
            preflight(graph, self._get(), uploaded=uploaded)

    def _get(self) -> dict[str, Any]:
        with self._lock:
            if self._info is None:
                self._info = self._client.object_info()
            return self._info


class Runner:
    """Executes workflows against one ComfyUI; shared by every task of a worker."""

    def __init__(self, settings: ComfySettings, client: ComfyClient | None = None) -> None:
        self.settings = settings
        self.client = client or ComfyClient(settings)
        self.events = EventStream(settings).start()
        self.object_info = ObjectInfoCache(self.client)
        self.events.on_reconnect = self.object_info.invalidate
        self._version: str | None = None
        self._first_run = True
        self._abort = threading.Event()

    @property
    def aborted(self) -> bool:
        """Whether ``abort`` was called (the worker is shutting down hard)."""
        return self._abort.is_set()

    def abort(self) -> None:
        """Stop the execution in flight: its prompt is cancelled in ComfyUI (thread-safe)."""
        self._abort.set()
        self.events.wake_all()

    def close(self) -> None:
        """Close the WebSocket and HTTP connections."""
        self.events.close()
        self.client.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def comfy_version(self) -> str:
        """ComfyUI's version, asked once."""
        if self._version is None:
            self._version = self.client.version()
        return self._version

    def run(
        self,
        request: RunRequest,
        *,
        on_event: ProgressCallback | None = None,
        trail: Trail | None = None,
    ) -> dict[str, Any]:
        """Execute ``request`` end to end and return the result (also saved as manifest)."""
        say = trail or (lambda _msg: None)
        clock = _Clock()
        graph = validate_graph(request.graph)
        prompt_id, finished = self._adopt(request)
        if prompt_id is None:
            prompt_id = request.prompt_id
            self._submit(graph, request, clock)
            say(f"submitted prompt {prompt_id}")
        else:
            say(f"adopted prompt {prompt_id} from an earlier attempt")
        if finished is None:
            finished = wait_or_cancel(
                self.client,
                self.events,
                prompt_id,
                timeout_s=self.settings.history_timeout_s,
                poll_interval_s=self.settings.poll_interval_s,
                on_event=_announcing_start(on_event, say),
                abort=self._abort,
            )
        clock.detected = finished.detected_at
        result = self._finish(request, prompt_id, finished.entry, clock)
        timings = result["timings_ms"]
        size = sum(o["size_bytes"] for o in result["outputs"])
        say(
            f"downloaded {len(result['outputs'])} files ({size} bytes) "
            f"in {timings['downloading']} ms"
        )
        say(
            f"finished: comfyui executed in {timings['comfy_execution']} ms, "
            f"queued {timings['queued']} ms, total {timings['total']} ms"
        )
        return result

    # --- steps ---------------------------------------------------------------------

    def _adopt(self, request: RunRequest) -> tuple[str | None, Finished | None]:
        """Find this task's prompt from an earlier attempt so the GPU never runs it twice.

        A prompt still queued or running is waited for; one that succeeded is
        downloaded; one that failed, was interrupted or vanished is ignored, except the
        current attempt's own id, whose failure is this attempt's result.
        """
        candidates = [*request.earlier_prompt_ids, request.prompt_id]
        queue = self.client.queue()
        for prompt_id in reversed(candidates):
            if prompt_id in queue:
                log.info("comfy.prompt_adopted", adopted_prompt_id=prompt_id, state="queued")
                return prompt_id, None
            entry = self.client.history(prompt_id)
            if entry is None:
                continue
            if prompt_id == request.prompt_id or _succeeded(entry):
                log.info("comfy.prompt_adopted", adopted_prompt_id=prompt_id, state="finished")
                return prompt_id, Finished(outcome(prompt_id, entry), time.monotonic())
        return None, None

    def _submit(self, graph: dict[str, Any], request: RunRequest, clock: _Clock) -> None:
        """Upload inputs, preflight, then POST /prompt without ever queueing it twice."""
        for upload in request.uploads:
            self.client.upload_image(upload.upload_name, upload.data, upload.content_type)
        if self.settings.preflight:
            self.object_info.check(graph, [u.upload_name for u in request.uploads])
        if self._first_run:  # let the socket open so the first run gets its events
            self.events.wait_connected(min(2.0, self.settings.http_timeout_s))
            self._first_run = False
        clock.submitted_wall_ms = time.time() * 1000
        for attempt in self.client.retrying():
            with attempt:
                self._submit_once(graph, request.prompt_id)
        clock.submitted = time.monotonic()
        log.info("comfy.prompt_queued", prompt_id=request.prompt_id)

    def _submit_once(self, graph: dict[str, Any], prompt_id: str) -> None:
        try:
            self.client.submit_once(graph, prompt_id=prompt_id, client_id=self.events.client_id)
        except (ComfyUnavailableError, ComfyServerError) as exc:
            # The request may have reached ComfyUI and only the answer was lost; ComfyUI
            # does not refuse a duplicate prompt id, so look before submitting again.
            if not self._was_queued(prompt_id, self._patience_s(exc)):
                raise

    def _patience_s(self, exc: ComfyUnavailableError | ComfyServerError) -> float:
        """How long a prompt whose answer went missing might still take to be filed.

        A timeout or a dropped connection (or a proxy's 504) may hide a request that
        ComfyUI is still processing; a refused connection or a 500 from ComfyUI itself
        does not.
        """
        in_flight = exc.details.get("cause") in IN_FLIGHT or exc.details.get("status") == 504
        return self.settings.http_timeout_s if in_flight else 0.0

    def _was_queued(self, prompt_id: str, patience_s: float) -> bool:
        """Whether ComfyUI holds the prompt, giving a slow server ``patience_s`` to file it."""
        deadline = time.monotonic() + patience_s
        while True:
            if self.client.knows(prompt_id):
                log.warning("comfy.submit_answer_lost", prompt_id=prompt_id)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.25, patience_s))

    def _finish(
        self, request: RunRequest, prompt_id: str, entry: dict[str, Any], clock: _Clock
    ) -> dict[str, Any]:
        run_dir = self.settings.output_dir / request.run_key
        collected = collect(
            entry.get("outputs") or {}, include_temp=self.settings.include_temp_outputs
        )
        downloader = Downloader(
            self.client,
            run_dir,
            max_bytes=self.settings.max_output_bytes,
            fsync=self.settings.fsync,
            abort=self._abort,
        )
        saved = downloader.save_all(collected.files)
        clock.downloaded = time.monotonic()
        log.info("comfy.outputs_saved", files=len(saved), bytes=sum(s.size_bytes for s in saved))
        text, truncated = bounded_text(collected.text)
        result: dict[str, Any] = {
            "prompt_id": prompt_id,
            "status": "success",
            "run_key": request.run_key,
            "output_dir": str(run_dir),
            "outputs": [_public(asdict(s), run_dir) for s in saved],
            "text": text,
            "text_truncated": truncated,
            "values": collected.values,
            "skipped_temp_outputs": collected.skipped_temp,
            "template": request.template,
            "params": request.params,
            "timings_ms": _timings(entry, clock),
            "comfyui": {"base_url": self.settings.base_url_str, "version": self.comfy_version()},
            "worker_version": __version__,
            "manifest": str(run_dir / "manifest.json"),
        }
        manifest = {**result, "text": collected.text, "text_truncated": False}
        manifest["created_at"] = datetime.now(UTC).isoformat()
        write_manifest(run_dir, manifest, fsync=self.settings.fsync)
        return bounded_result(result)


def bounded_result(result: dict[str, Any], limit_bytes: int = MAX_RESULT_BYTES) -> dict[str, Any]:
    """Keep the task output far below LittleHorse's ~1 MB record limit.

    With thousands of outputs (video frames) the list is cut; ``manifest.json``
    always lists every file.
    """
    outputs = result["outputs"]
    if len(json.dumps(result)) <= limit_bytes:
        return result
    per_output = max(len(json.dumps(outputs)) // max(len(outputs), 1), 1)
    keep = max((limit_bytes // 2) // per_output, 1)
    return {
        **result,
        "outputs": outputs[:keep],
        "outputs_total": len(outputs),
        "outputs_truncated": True,
    }


def _announcing_start(on_event: ProgressCallback | None, say: Trail) -> ProgressCallback:
    """Pass events on, and note in the trail when ComfyUI starts executing."""

    def forward(kind: str, data: dict[str, Any]) -> None:
        if kind == "execution_start":
            say("ComfyUI started executing")
        if on_event is not None:
            on_event(kind, data)

    return forward


def _succeeded(entry: dict[str, Any]) -> bool:
    return bool((entry.get("status") or {}).get("status_str", "success") == "success")


def _public(record: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A saved output as it appears in the result (path relative to the run dir too)."""
    record["relative_path"] = str(Path(record["path"]).relative_to(run_dir))
    return record


def _timings(entry: dict[str, Any], clock: _Clock) -> dict[str, int]:
    """Worker-observed phases plus ComfyUI's own execution time from its timestamps."""
    stamps = {
        kind: data.get("timestamp")
        for kind, data in (entry.get("status") or {}).get("messages", [])
        if isinstance(data, dict)
    }
    start_ms = stamps.get("execution_start")
    end_ms = next(
        (
            stamps[k]
            for k in ("execution_success", "execution_error", "execution_interrupted")
            if stamps.get(k)
        ),
        None,
    )
    waited = max(clock.detected - (clock.submitted or clock.detected), 0.0) * 1000
    queued = min(max(start_ms - clock.submitted_wall_ms, 0.0), waited) if start_ms else 0.0
    return {
        "queued": round(queued),
        "executing": round(waited - queued),
        "downloading": round((clock.downloaded - clock.detected) * 1000),
        "total": round((clock.downloaded - clock.start) * 1000),
        "comfy_execution": round(end_ms - start_ms) if start_ms and end_ms else 0,
    }
