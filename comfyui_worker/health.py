"""/healthz, /readyz and /metrics on ``WORKER_HTTP_PORT``, served from a daemon thread.

Liveness is the SDK's own view (its last RegisterTaskWorker heartbeat, every 60 s).
Readiness probes what the worker can really observe right now: ComfyUI's
/system_stats and a LittleHorse round trip, each with a short timeout and a short
cache so a busy scraper cannot hammer either. A dead PollTask stream is invisible
to both until the SDK's next heartbeat (see README, Troubleshooting).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = structlog.get_logger("comfyui_worker.health")

Probe = Callable[[], None]  # raises when the dependency is down
CACHE_S = 2.0


class CachedProbe:
    """Runs a probe at most once per ``CACHE_S`` and remembers the verdict."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._checked_at = 0.0
        self._error: str | None = "not checked yet"
        self._lock = threading.Lock()

    def __call__(self) -> str | None:
        """None when up, else a short reason."""
        with self._lock:
            if time.monotonic() - self._checked_at >= CACHE_S:
                try:
                    self._probe()
                    self._error = None
                except Exception as exc:
                    self._error = f"{type(exc).__name__}: {str(exc)[:200]}"
                self._checked_at = time.monotonic()
            return self._error


class HealthServer:
    """A tiny HTTP server for probes and Prometheus scrapes."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        alive: Callable[[], str | None],
        ready_probes: dict[str, Probe],
    ) -> None:
        self.alive = alive
        self.ready = {name: CachedProbe(probe) for name, probe in ready_probes.items()}
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
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
        """Liveness: the process runs and the SDK reports healthy."""
        problem = self.alive()
        return (200, {"status": "ok"}) if problem is None else (503, {"status": problem})

    def readyz(self) -> tuple[int, dict[str, object]]:
        """Readiness: every dependency answers; the body says which part is down."""
        checks = {name: probe() for name, probe in self.ready.items()}
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
