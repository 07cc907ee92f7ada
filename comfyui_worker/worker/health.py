"""Readiness (what the worker needs to take a task) and /healthz, /readyz, /metrics.

Readiness probes what the worker can observe right now: its ComfyUI answers, its
output location is writable, and it holds an open PollTask stream to LittleHorse
(from the SDK ledger, not a guess). Each probe's verdict is cached briefly so a
busy scraper cannot hammer ComfyUI. The same verdict gates polling: while ComfyUI
or the output location is down, the worker asks LittleHorse for no task at all,
rather than claiming tasks only to fail them.

Liveness fails when a task the SDK claimed has not started within its own timeout:
a leaked slot would otherwise leave a worker that looks alive and takes nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from comfyui_worker.httpserve import BoundedHTTPServer

log = structlog.get_logger("comfyui_worker.worker.health")

Probe = Callable[[], str | None]  # None when up, else a short reason
CACHE_S = 2.0
GATE_RECHECK_S = 0.25


class CachedProbe:
    """Runs a probe at most once per ``CACHE_S`` and remembers the verdict."""

    def __init__(self, probe: Callable[[], object]) -> None:
        self._probe = probe
        self._checked_at = -CACHE_S
        self._error: str | None = "not checked yet"
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Forget the verdict: the next call probes again."""
        with self._lock:
            self._checked_at = -CACHE_S

    def __call__(self) -> str | None:
        """None when up, else a short reason."""
        with self._lock:
            if time.monotonic() - self._checked_at >= CACHE_S:
                self._error = _run_probe(self._probe)
                self._checked_at = time.monotonic()
            return self._error


def _run_probe(probe: Callable[[], object]) -> str | None:
    """Run a probe (raising means down; its return value is ignored); never raises."""
    try:
        probe()
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return _cut(str(message))
    return None


def _cut(reason: str | None) -> str | None:
    return None if reason is None else reason[:300]


class Readiness:
    """Named probes; the ones marked ``gating`` must pass before a task is claimed."""

    def __init__(self) -> None:
        self.probes: dict[str, Probe] = {}
        self.gating: set[str] = set()
        self._cached: list[CachedProbe] = []
        self._last_gate_problem: str | None = None

    def add(self, name: str, probe: Callable[[], object], *, gating: bool, cached: bool) -> None:
        """Register a check that raises when its dependency is down (what it returns is ignored)."""
        if cached:
            self._cached.append(cached_probe := CachedProbe(probe))
            self._register(name, cached_probe, gating)
        else:
            self._register(name, lambda: _run_probe(probe), gating)

    def invalidate(self) -> None:
        """A task just failed on the environment: probe afresh before trusting a verdict."""
        for probe in self._cached:
            probe.invalidate()

    def add_problem(self, name: str, problem: Probe, *, gating: bool) -> None:
        """Register state that names its own problem (None when up); read afresh each time."""
        self._register(name, lambda: _cut(problem()), gating)

    def _register(self, name: str, probe: Probe, gating: bool) -> None:
        self.probes[name] = probe
        if gating:
            self.gating.add(name)

    def report(self) -> dict[str, str | None]:
        """Every probe's verdict."""
        return {name: probe() for name, probe in self.probes.items()}

    def gate_problem(self) -> str | None:
        """The first gating probe that fails, as ``name: reason``."""
        for name in sorted(self.gating):
            problem = self.probes[name]()
            if problem is not None:
                return f"{name}: {problem}"
        return None

    async def gate(self) -> None:
        """Wait until every gating probe passes (awaited before each task is claimed)."""
        while (problem := await asyncio.to_thread(self.gate_problem)) is not None:
            if problem != self._last_gate_problem:
                log.warning("worker.not_taking_tasks", problem=problem)
                self._last_gate_problem = problem
            await asyncio.sleep(GATE_RECHECK_S)
        if self._last_gate_problem is not None:
            log.info("worker.taking_tasks_again")
            self._last_gate_problem = None

    async def wait_ready(
        self, timeout_s: float, give_up: Callable[[], bool] = lambda: False
    ) -> str | None:
        """Wait up to ``timeout_s`` for every gating probe to pass; the problem left, or None.

        The gate runs when the SDK *sends* a poll request, which LittleHorse may answer
        much later, after an outage began: a task claimed so is held here until the
        worker can run it, instead of failing (and spending one of its retries).
        ``give_up`` (the worker is draining) ends the wait early.
        """
        deadline = time.monotonic() + timeout_s
        problem = await asyncio.to_thread(self.gate_problem)
        if problem is not None:
            log.warning("task.waiting_until_ready", problem=problem, timeout_s=timeout_s)
        while problem is not None and time.monotonic() < deadline and not give_up():
            await asyncio.sleep(min(GATE_RECHECK_S, deadline - time.monotonic()))
            problem = await asyncio.to_thread(self.gate_problem)
        return problem


class HealthServer:
    """A tiny HTTP server for probes and Prometheus scrapes."""

    def __init__(
        self, host: str, port: int, *, alive: Callable[[], str | None], readiness: Readiness
    ) -> None:
        self.alive = alive
        self.readiness = readiness
        self._server = BoundedHTTPServer((host, port), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="health-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (useful when configured as an ephemeral one)."""
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Serve in the background."""
        self._thread.start()
        log.info("health.listening", port=self.port)
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def healthz(self) -> tuple[int, dict[str, object]]:
        """Liveness: no task the worker claimed is stuck before its start."""
        problem = self.alive()
        return (200, {"status": "ok"}) if problem is None else (503, {"status": problem})

    def readyz(self) -> tuple[int, dict[str, object]]:
        """Readiness: every dependency answers; the body says which part is down."""
        checks = self.readiness.report()
        body: dict[str, object] = {name: error or "ok" for name, error in checks.items()}
        return (200 if all(e is None for e in checks.values()) else 503), body


def _handler(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                return
            routes = {"/healthz": owner.healthz, "/readyz": owner.readyz}
            route = routes.get(self.path.split("?")[0])
            if route is None:
                self._send(404, b'{"status": "not found"}', "application/json")
                return
            status, body = route()
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            """Silence per-request access logs (probes come every few seconds)."""

    return Handler
