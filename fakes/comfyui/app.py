"""The server: aiohttp on its own loop in a daemon thread, its routes, and FakeComfyUI.

Every route is served with and without the ``/api`` prefix, like ComfyUI; the jobs API
(0.38 only) exists only under ``/api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from fakes.comfyui.faults import Faults, internal_error
from fakes.comfyui.files import Files
from fakes.comfyui.hub import Hub
from fakes.comfyui.jobs import JobsApi, is_canonical_uuid
from fakes.comfyui.models import MODEL_FOLDERS, model_files
from fakes.comfyui.nodes import DEFAULT_CHECKPOINTS, DEFAULT_UPSCALE_MODELS, object_info
from fakes.comfyui.queue import WorkQueue
from fakes.comfyui.samples import load_fixture
from fakes.comfyui.simulate import Job
from fakes.comfyui.validation import NotAGraph, check_prompt

_T = TypeVar("_T")


class FakeComfyUI:
    """A fake ComfyUI: real HTTP and WebSocket on 127.0.0.1, simulated execution.

    ``version`` picks the generation: "0.3.64" (default) behaves as the captures; "0.38.0"
    (or later) checks client prompt_ids and serves the jobs API. See the package docstring.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        version: str = "0.3.64",
        checkpoints: list[str] | None = None,
        upscale_models: list[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models_dir: Path | None = None,
    ) -> None:
        self.root, self.version, self.host, self.port = Path(root), version, host, port
        self.models_dir = models_dir  # files here are listed as installed, like models/
        self.newer = tuple(int(part) for part in version.split(".")[:2]) >= (0, 38)
        # controls
        self.execution_time_s = 0.0
        self.history_delay_s = 0.0
        self.websocket_enabled = True
        self.checkpoints = list(DEFAULT_CHECKPOINTS if checkpoints is None else checkpoints)
        self.upscale_models = list(
            DEFAULT_UPSCALE_MODELS if upscale_models is None else upscale_models
        )
        # introspection (times are time.monotonic())
        self.submitted: list[str] = []  # prompt ids accepted, in POST order
        self.executed: list[str] = []  # prompts that ran at least one node
        self.cached_runs: list[str] = []  # prompts served entirely from the cache
        self.interrupted: list[str] = []
        self.deleted: list[str] = []  # pending prompts dropped (POST /queue, jobs cancel)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.free_calls: list[Any] = []  # bodies of POST /free
        self.received_times: dict[str, float] = {}
        self.started_times: dict[str, float] = {}
        self.finish_times: dict[str, float] = {}
        self.node_times: dict[str, dict[str, tuple[float, float]]] = {}
        self.files = Files(self.root)
        self.uploads = self.files.uploads
        self._faults = faults = Faults(lambda method, path: self.requests.append((method, path)))
        # fault controls, documented in faults.py
        self.fail_node, self.clear_failures = faults.fail_node, faults.clear_failures
        self.node_failure = faults.node_failure
        self.fail_requests, self.delay_requests = faults.fail_requests, faults.delay_requests
        self.cut_requests, self.hang_requests = faults.cut_requests, faults.hang_requests
        self.clear_request_faults = faults.clear_request_faults
        # runtime, owned by the loop thread once started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.hub: Hub
        self._queue: WorkQueue

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """http://HOST:PORT (valid once started)."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """ws://HOST:PORT/ws."""
        return f"ws://{self.host}:{self.port}/ws"

    def start(self) -> FakeComfyUI:
        """Start serving; returns once listening."""
        if self._thread is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()
            try:
                self._call(self._astart())
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._astop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._thread = self._loop = None

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def restart(self) -> None:
        """Forget queue, running prompt, history and cache; close sockets (a restart)."""
        self._call(self._arestart())

    def stop_http(self, *, forget: bool = True) -> None:
        """Stop listening (connections refused); forget=True also loses all state (a crash)."""
        self._call(self._astop_http(forget))

    def start_http(self) -> None:
        """Listen again, on the same port, after stop_http()."""
        self._call(self._astart_http())

    # --- controls --------------------------------------------------------------------------

    def release_hung(self) -> None:
        """Let requests held by hang_requests() be handled and answered now."""
        self._on_loop(self._faults.release)

    def pause(self) -> None:
        """Hold the queue: prompts not yet started stay pending (the running one goes on)."""
        self._on_loop(setattr, self._queue, "paused", True)

    def resume(self) -> None:
        """Let the queue run again."""
        self._on_loop(self._queue.resume)

    def drop_websockets(self, *, abrupt: bool = False) -> None:
        """Close every open WebSocket now (abrupt: no close frame)."""
        self._call(self.hub.close_all(abrupt=abrupt))

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until nothing runs or waits (prompts held by pause() count as waiting)."""
        deadline = time.monotonic() + timeout
        while self.queue_remaining:
            if time.monotonic() > deadline:
                raise TimeoutError("fake ComfyUI still busy")
            time.sleep(0.002)

    @property
    def queue_remaining(self) -> int:
        """Pending plus running prompts."""
        return self._queue.remaining

    @property
    def websocket_count(self) -> int:
        """Open WebSockets."""
        return len(self.hub.open)

    # --- loop plumbing ---------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("FakeComfyUI is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        async def call() -> None:
            fn(*args)

        self._call(call())

    async def _astart(self) -> None:
        self.hub = Hub()
        self._queue = WorkQueue(self)
        self._queue.start()
        self._publisher = asyncio.get_running_loop().create_task(self.hub.publish())
        await self._astart_http()

    async def _astop(self) -> None:
        await self._astop_http(forget=False)
        await self._queue.stop()
        self._publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._publisher

    async def _astart_http(self) -> None:
        if self._runner is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.5)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()

    async def _astop_http(self, forget: bool) -> None:
        self._faults.release(answer=False)
        await self.hub.close_all(abrupt=False)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if forget:
            await self._queue.restart()

    async def _arestart(self) -> None:
        await self.hub.close_all(abrupt=False)
        await self._queue.restart()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults.middleware], client_max_size=1 << 30)
        routes = [
            ("GET", "/ws", self._websocket),
            ("GET", "/prompt", self._get_prompt),
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("POST", "/interrupt", self._post_interrupt),
            ("POST", "/free", self._post_free),
            ("GET", "/history", self._get_history),
            ("GET", "/history/{prompt_id}", self._get_history_entry),
            ("GET", "/view", self.files.view),
            ("POST", "/upload/image", self.files.upload),
            ("GET", "/system_stats", self._system_stats),
            ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info),
            ("GET", "/models", self._get_model_folders),
            ("GET", "/models/{folder}", self._get_models),
        ]
        routes = [(method, api + path, fn) for method, path, fn in routes for api in ("/api", "")]
        for method, path, handler in routes + (JobsApi(self._queue).routes() if self.newer else []):
            app.router.add_route(method, path, handler)
            if method == "GET":
                app.router.add_route("HEAD", path, handler)
        return app

    # --- handlers --------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.websocket_enabled:
            return web.Response(status=403, text="403: Forbidden")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        self.hub.by_sid[sid] = ws  # a reused clientId: the older socket stops receiving
        self.hub.open[ws] = request
        try:
            await ws.send_json(
                {"type": "status", "data": {"status": self._queue.status(), "sid": sid}}
            )
            active = self._queue.active
            if active is not None and active.client == sid and active.last_node is not None:
                await ws.send_json({"type": "executing", "data": {"node": active.last_node}})
            async for _message in ws:  # clients have nothing to say; wait for the close
                pass
        finally:
            self.hub.by_sid.pop(sid, None)  # by id, even if a newer socket took it over
            self.hub.open.pop(ws, None)
        return ws

    async def _post_prompt(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return internal_error()  # an empty or non-JSON body crashes ComfyUI's handler
        if not isinstance(body, dict):
            return internal_error()
        if "number" in body:
            number: float = float(body["number"])
        else:  # counted even when the prompt is refused below
            number = self._queue.next_number() * (-1 if body.get("front") else 1)
        if "prompt" not in body:
            return _refused("no_prompt", "No prompt provided", "No prompt provided")
        if not self.newer:
            prompt_id = str(body["prompt_id"]) if "prompt_id" in body else str(uuid.uuid4())
        elif body.get("prompt_id") is None:
            prompt_id = str(uuid.uuid4())
        elif is_canonical_uuid(body["prompt_id"]):
            prompt_id = body["prompt_id"]
        else:
            why = "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
            why += "omit it to let the server generate one"
            return _refused("invalid_prompt_id", "prompt_id must be a valid UUID", why)
        try:
            verdict = check_prompt(
                body["prompt"],
                self._object_info_now(),
                targets=body.get("partial_execution_targets"),
                newer=self.newer,
                exists=lambda name: self.files.input_path(name).exists(),
            )
        except NotAGraph:
            return internal_error()
        if verdict.error is not None:
            errors = {"error": verdict.error, "node_errors": verdict.node_errors}
            return web.json_response(errors, status=400)
        extra_data = body.get("extra_data", {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if self.newer:
            extra_data["create_time"] = int(time.time() * 1000)
        self._queue.add(Job(number, prompt_id, body["prompt"], extra_data, verdict.outputs))
        answer = {"prompt_id": prompt_id, "number": number, "node_errors": verdict.node_errors}
        return web.json_response(answer)

    async def _get_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._queue.status())

    async def _get_queue(self, request: web.Request) -> web.StreamResponse:
        running = [self._queue.running.item()] if self._queue.running else []
        pending = [job.item() for job in self._queue.pending]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("clear"):
            self._queue.clear()
        for prompt_id in body.get("delete", []):
            self._queue.delete(prompt_id)
        return web.Response()

    async def _post_interrupt(self, request: web.Request) -> web.StreamResponse:
        try:
            prompt_id = (await request.json()).get("prompt_id")
        except ValueError:
            prompt_id = None  # no JSON body: interrupt whatever runs
        self._queue.interrupt(prompt_id or None)
        return web.Response()

    async def _post_free(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.free_calls.append(body)
        self._queue.free_requested |= bool(body.get("free_memory"))
        return web.Response()

    async def _get_history(self, request: web.Request) -> web.StreamResponse:
        query, entries = request.rel_url.query, list(self._queue.history.items())
        most = int(query["max_items"]) if "max_items" in query else len(entries)
        offset = int(query.get("offset", -1))
        start = offset if offset >= 0 else max(len(entries) - most, 0)
        return web.json_response(dict(entries[start : start + most]))

    async def _get_history_entry(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        entry = self._queue.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def _system_stats(self, request: web.Request) -> web.StreamResponse:
        stats = load_fixture("get_system_stats.json")  # a CPU machine running 0.3.64
        stats["system"]["comfyui_version"] = self.version
        if self.newer:  # keys the 2026 releases add (made-up values)
            package = {"name": "comfyui-frontend-package", "installed": "1.27.10"}
            package["required"] = package["installed"]
            stats["system"] |= {
                "comfy_package_versions": [package],
                "deploy_environment": "local-git",
            }
        return web.json_response(stats)

    def installed(self, folder: str) -> list[str]:
        """A model folder's files: the configured list plus those in ``models_dir``."""
        configured = {"checkpoints": self.checkpoints, "upscale_models": self.upscale_models}
        listed = list(configured.get(folder, []))
        return listed + [f for f in model_files(self.models_dir, folder) if f not in listed]

    def _object_info_now(self) -> dict[str, Any]:
        images = self.files.input_images()
        return object_info(self.installed("checkpoints"), self.installed("upscale_models"), images)

    async def _get_model_folders(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(list(MODEL_FOLDERS))

    async def _get_models(self, request: web.Request) -> web.StreamResponse:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404, text="404: Not Found")
        return web.json_response(self.installed(folder))

    async def _object_info(self, request: web.Request) -> web.StreamResponse:
        info, name = self._object_info_now(), request.match_info.get("node_class")
        if name is None:
            return web.json_response(info)
        return web.json_response({name: info[name]} if name in info else {})


def _refused(kind: str, message: str, details: str) -> web.Response:
    error = {"type": kind, "message": message, "details": details, "extra_info": {}}
    return web.json_response({"error": error, "node_errors": {}}, status=400)
