"""The blocking execution loop: adopt or submit → wait → download → manifest.

It runs in a thread (the LittleHorse handler calls it with ``asyncio.to_thread``),
takes a ``RunRequest`` whose graph was validated when it was built, and raises only
``errors.ComfyWorkerError`` subclasses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from comfyui_worker import __version__
from comfyui_worker.comfy.client import ComfyClient, ServerInfo
from comfyui_worker.comfy.events import TERMINAL, EventStream, ProgressCallback, Watch
from comfyui_worker.comfy.history import HistoryEntry
from comfyui_worker.comfy.waiting import (
    Finished,
    StopCheck,
    Waiter,
    WaitPolicy,
    cancel_quietly,
)
from comfyui_worker.errors import ComfyOutOfMemoryError, TechnicalError, WorkerShuttingDownError
from comfyui_worker.logs import outside_task
from comfyui_worker.models.ensure import ModelEnsurer
from comfyui_worker.outputs.collect import MANIFEST, collect
from comfyui_worker.outputs.download import Downloader
from comfyui_worker.outputs.early import EarlySaver
from comfyui_worker.outputs.store import OutputStore, RunStore, open_store
from comfyui_worker.result import ComfyInfo, RunResult, Timings
from comfyui_worker.run import adoption
from comfyui_worker.run.adoption import Adopted, Candidate, Server, candidate_of
from comfyui_worker.run.fencing import Fence, NoFence
from comfyui_worker.run.submission import Clock, Submitter
from comfyui_worker.settings import ComfySettings
from comfyui_worker.workflow.request import RunRequest

log = structlog.get_logger("comfyui_worker.run.execution")

Trail = Callable[[str], None]
NO_FENCE = NoFence()
ROOM_CHECK_S = 0.1  # how often a task waiting for room in ComfyUI looks for a shutdown


class Runner:
    """Executes workflows against one ComfyUI; shared by every task of a worker."""

    def __init__(
        self,
        settings: ComfySettings,
        client: ComfyClient | None = None,
        store: OutputStore | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or ComfyClient(settings)
        self.store: OutputStore = store or open_store(settings)
        self.events = EventStream(settings).start()
        self.events.on_reconnect = self._on_reconnect
        self.local = Server(self.client, self.events)
        self.submitter = Submitter(settings, self.client, self.events)
        self.models = ModelEnsurer(
            settings, self.client, on_downloaded=self.submitter.object_info.invalidate
        )
        self._learned = False
        self._abort = threading.Event()
        self._hand_back = threading.Event()
        self._active: dict[str, Server] = {}  # prompt id -> where it runs (up to 1 + prefetch)
        # Room in ComfyUI: a task submits only while fewer than 1 + prefetch of the
        # worker's prompts are there, and frees its place the moment its prompt finished,
        # so the next task's checkpoint and POST overlap this one's saving and report.
        self._in_comfyui = threading.BoundedSemaphore(settings.slots)
        self._finished_count = 0
        self.cancelled: str | None = None  # what Ctrl-C did to the prompt

    @property
    def aborted(self) -> bool:
        """Whether ``abort`` was called (the worker is shutting down hard)."""
        return self._abort.is_set()

    def abort(self) -> None:
        """Stop the execution in flight: its prompt is cancelled in ComfyUI (thread-safe)."""
        self._abort.set()
        self.events.wake_all()
        for server in list(self._active.values()):
            if server.owned:  # a peer's socket; our own was just woken
                server.events.wake_all()

    def hand_back_pending(self) -> None:
        """Draining: prompts that have not started leave ComfyUI's queue; running ones go on."""
        self._hand_back.set()
        self.events.wake_all()

    def close(self) -> None:
        """Close the WebSocket and HTTP connections."""
        self.events.close()
        self.client.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- what the worker knows of its ComfyUI --------------------------------------

    def learn_server(self) -> ServerInfo:
        """Ask ComfyUI its version and API generation (at start and after a reconnect)."""
        info = self.client.server_info()
        self._learned = True
        with outside_task():
            log.info("comfy.server_info", version=info.version, jobs_api=info.jobs_api)
        return info

    def known_server(self) -> ServerInfo:
        """The last known server facts, learned now if not yet; never raises.

        Called at start and before each run, so a task's path never asks once learned.
        """
        if not self._learned:
            try:
                return self.learn_server()
            except TechnicalError as exc:
                log.warning("comfy.server_info_unavailable", error=exc.name, message=exc.message)
        return self.client.info

    def _on_reconnect(self) -> None:
        """ComfyUI may have restarted (new models, a new version): forget what we knew."""
        self.submitter.object_info.invalidate()
        self._learned = False

    # --- one run ------------------------------------------------------------------

    def run(
        self,
        request: RunRequest,
        *,
        on_event: ProgressCallback | None = None,
        trail: Trail | None = None,
        stop: StopCheck | None = None,
        fence: Fence = NO_FENCE,
    ) -> RunResult:
        """Execute ``request`` end to end and return the result (also saved as manifest)."""
        say = trail or _silent
        clock = Clock()
        self.known_server()
        earlier = _may_have_earlier(request, fence)
        adopted = self._adopt(request, fence) if earlier else None
        server = adopted.server if adopted is not None else self.local
        downloader = Downloader(
            server.client,
            self.store.run(request.run_key),
            max_bytes=self.settings.max_output_bytes,
            abort=self._abort,
            may_reuse=earlier,
        )
        early = EarlySaver(downloader, include_temp=self.settings.include_temp_outputs)
        events = _both(on_event, early.offer)
        try:
            with self.models.ensured(request.models if adopted is None else (), say):
                prompt_id, finished = self._execute(
                    request, adopted, server, fence, clock, say, events, stop
                )
            clock.detected = finished.detected_at
            log.info("comfy.prompt_finished")
            result = self._finish(
                request, server, prompt_id, finished.entry, clock, downloader, early
            )
        finally:
            early.finish()  # nothing keeps writing after the run, whatever happened
            server.close()  # a peer's connections; the worker's own stay open
        self._after_success()
        _say_finished(say, result)
        return result

    def warm_up(self, request: RunRequest) -> None:
        """Execute a request on ComfyUI and wait for it, keeping none of its outputs."""
        with (
            self.models.ensured(request.models, _silent),
            self.events.watch(request.prompt_id, own=True) as watch,
        ):
            self.submitter.submit(request, Clock(), NO_FENCE)
            self._wait(self.local, watch, None, request.graph_sha256)

    # --- steps ---------------------------------------------------------------------

    def _adopt(self, request: RunRequest, fence: Fence) -> Adopted | None:
        """An earlier attempt's prompt, here first, then on a peer that ran it."""
        own_url = self.settings.advertised_url
        recorded_here = [candidate_of(s) for s in fence.earlier if s.comfyui_url == own_url]
        current = Candidate(request.prompt_id, request.graph_sha256)
        candidates = list(dict.fromkeys([*recorded_here, current]))
        found = adoption.find(self.client, candidates, request.prompt_id)
        if found is not None:
            return Adopted(self.local, *found)
        return adoption.on_peers(self.settings, fence.earlier, own_url)

    def _execute(
        self,
        request: RunRequest,
        adopted: Adopted | None,
        server: Server,
        fence: Fence,
        clock: Clock,
        say: Trail,
        on_event: ProgressCallback | None,
        stop: StopCheck | None,
    ) -> tuple[str, Finished]:
        """Submit (or take over) the prompt and wait for it, watching its events throughout."""
        waited = adopted.candidate if adopted is not None else None
        prompt_id = waited.prompt_id if waited is not None else request.prompt_id
        expected = waited.graph_sha256 if waited is not None else request.graph_sha256
        own = adopted is None  # we submit it now, so its events come to our socket
        announce = _announcing_start(on_event, say, fence)
        entered = False
        with server.events.watch(prompt_id, announce, own=own) as watch:
            try:
                if adopted is None:
                    entered = self._enter_comfyui()
                    ahead = self._queued_ahead()
                    self._active[prompt_id] = server
                    self.submitter.submit(request, clock, fence, queued_behind=ahead)
                    say(f"submitted prompt {prompt_id}")
                else:
                    self._active[prompt_id] = server
                    where = f" on {server.base_url}" if server.owned else ""
                    say(f"adopted prompt {prompt_id} from an earlier attempt{where}")
                if adopted is not None and adopted.finished is not None:
                    return prompt_id, adopted.finished
                return prompt_id, self._wait(server, watch, stop, expected)
            except KeyboardInterrupt:  # Ctrl-C in `main.py run`: free the GPU before leaving
                self.cancelled = cancel_quietly(server.client, prompt_id)
                raise
            finally:
                self._active.pop(prompt_id, None)
                if entered:
                    self._in_comfyui.release()  # the next task may submit while this one saves

    def _enter_comfyui(self) -> bool:
        """Wait for room in ComfyUI's queue (1 + prefetch prompts); True once entered.

        A task waiting here has submitted nothing, so draining hands it back at once.
        """
        while not self._in_comfyui.acquire(timeout=ROOM_CHECK_S):
            if self._hand_back.is_set() or self._abort.is_set():
                raise WorkerShuttingDownError(
                    "worker is shutting down; the task was waiting for its turn and had "
                    "submitted nothing, so it goes back to LittleHorse"
                )
        return True

    def _queued_ahead(self) -> int:
        """How many of the worker's prompts in its own ComfyUI a new one would wait behind.

        Counted only with prefetch (without it a prompt never waits behind our own).
        """
        if not self.settings.prefetch:
            return 0
        return sum(1 for server in list(self._active.values()) if server is self.local)

    def _wait(
        self, server: Server, watch: Watch, stop: StopCheck | None, graph_sha256: str | None
    ) -> Finished:
        policy = WaitPolicy(
            timeout_s=self.settings.history_timeout_s,
            poll_interval_s=self.settings.poll_interval_s,
            abort=self._abort,
            stop=stop,
            pending_timeout_s=self.settings.history_timeout_s * self.settings.slots,
            hand_back=self._hand_back,
        )
        try:
            return Waiter(server.client, watch, policy, graph_sha256).run()
        except ComfyOutOfMemoryError:
            self._free_memory(server, "out of memory")
            raise

    def _after_success(self) -> None:
        self._finished_count += 1
        every = self.settings.free_memory_every
        if every and self._finished_count % every == 0:
            self._free_memory(self.local, f"every {every} tasks (COMFYUI_FREE_MEMORY_EVERY)")

    def _free_memory(self, server: Server, why: str) -> None:
        """POST /free so the next attempt starts with empty VRAM; never raises."""
        try:
            server.client.free_memory()
            log.info("comfy.memory_freed", reason=why)
        except TechnicalError as exc:
            log.warning("comfy.free_failed", error=exc.name, message=exc.message)

    def _finish(
        self,
        request: RunRequest,
        server: Server,
        prompt_id: str,
        entry: HistoryEntry,
        clock: Clock,
        downloader: Downloader,
        early: EarlySaver,
    ) -> RunResult:
        run_store = downloader.store
        collected = collect(entry.outputs, include_temp=self.settings.include_temp_outputs)
        saved = downloader.save_all(collected.files, early.finish())
        clock.downloaded = time.monotonic()
        log.info("comfy.outputs_saved", files=len(saved), bytes=sum(s.size_bytes for s in saved))
        result = RunResult(
            prompt_id=prompt_id,
            run_key=request.run_key,
            output_dir=run_store.location,
            outputs=saved,
            text=collected.text,
            values=collected.values,
            skipped_temp_outputs=collected.skipped_temp,
            template=request.template,
            params=request.params,
            overrides=request.overrides,
            timings_ms=_timings(entry, clock),
            comfyui=ComfyInfo(base_url=server.base_url, version=server.info.version),
            worker_version=__version__,
            manifest=f"{run_store.location}/{MANIFEST}",
        )
        _write_manifest(run_store, result)
        return result


def _may_have_earlier(request: RunRequest, fence: Fence) -> bool:
    """Whether an earlier attempt may have left a prompt or files behind.

    A fresh task (first attempt, nothing recorded) cannot: no round trip to look.
    """
    return not request.fresh or bool(fence.earlier)


def _write_manifest(run_store: RunStore, result: RunResult) -> None:
    manifest = {**result.manifest_json(), "created_at": datetime.now(UTC).isoformat()}
    run_store.write_manifest(manifest)


def _both(first: ProgressCallback | None, second: ProgressCallback) -> ProgressCallback:
    """One callback that calls both (the caller's progress, then the early saver)."""

    def call(kind: str, data: dict[str, Any]) -> None:
        if first is not None:
            first(kind, data)
        second(kind, data)

    return call


def _silent(_line: str) -> None:
    """A trail that goes nowhere (``main.py run`` shows progress instead)."""


def _say_finished(say: Trail, result: RunResult) -> None:
    timings = result.timings_ms
    size = sum(o.size_bytes for o in result.outputs)
    say(f"downloaded {len(result.outputs)} files ({size} bytes) in {timings.downloading} ms")
    say(
        f"finished: comfyui executed in {timings.comfy_execution} ms, "
        f"queued {timings.queued} ms, total {timings.total} ms"
    )


def _announcing_start(
    on_event: ProgressCallback | None, say: Trail, fence: Fence
) -> ProgressCallback:
    """Pass events on; note in the trail (and the fence, if prefetched) when ComfyUI starts."""

    def forward(kind: str, data: dict[str, Any]) -> None:
        if kind == "execution_start":
            say("ComfyUI started executing")
            fence.started(str(data.get("prompt_id")))
        if on_event is not None:
            on_event(kind, data)

    return forward


def _timings(entry: HistoryEntry, clock: Clock) -> Timings:
    """Worker-observed phases plus ComfyUI's own execution time from its timestamps."""
    stamps = entry.timestamps_ms()
    start_ms = stamps.get("execution_start")
    end_ms = next((stamps[k] for k in TERMINAL if stamps.get(k)), None)
    waited = max(clock.detected - (clock.submitted or clock.detected), 0.0) * 1000
    queued = min(max(start_ms - clock.submitted_wall_ms, 0.0), waited) if start_ms else 0.0
    return Timings(
        queued=round(queued),
        executing=round(waited - queued),
        downloading=round((clock.downloaded - clock.detected) * 1000),
        total=round((clock.downloaded - clock.start) * 1000),
        comfy_execution=round(end_ms - start_ms) if start_ms and end_ms else 0,
    )
