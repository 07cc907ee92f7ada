"""``main.py ui``: the jobs page, a static page over a small JSON API (no build step).

A bounded threading server (``httpserve.py``) serves three fixed static files
(``web/static/``) and the API of ``web/api.py``; ``web/guard.py`` decides who may call it.
Every response forbids framing and sniffing; the page may run only its own script;
an output file is served with a sandboxing CSP, inline only for images, video and
audio and as a download otherwise.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit

import structlog

from comfyui_worker.errors import (
    ComfyWorkerError,
    ConfigError,
    InvalidWorkflowError,
    as_error,
)
from comfyui_worker.httpserve import BoundedHTTPServer
from comfyui_worker.jobs.client import Jobs
from comfyui_worker.jobs.settings import JobsSettings, UiSettings
from comfyui_worker.web.api import UiApi
from comfyui_worker.web.guard import Guard
from comfyui_worker.web.routes import GET_ROUTES, POST_ROUTES, PUBLIC, Route
from comfyui_worker.workflow import jsonsafe

log = structlog.get_logger("comfyui_worker.web.server")

STATIC = Path(__file__).parent / "static"
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
POLL_S = 0.1  # how soon shutdown() is noticed
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; script-src 'self'; "
    "style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
FILE_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; sandbox"
INLINE = re.compile(r"^(image/(png|jpeg|gif|webp|avif)|video/(mp4|webm)|audio/[a-z0-9.+-]+)$")


class UiServer(BoundedHTTPServer):
    """The HTTP server, holding the API and the guard its handlers use."""

    def __init__(self, ui: UiSettings, api: UiApi, **bounds: Any) -> None:
        self.api = api
        self.guard = Guard(ui)
        if ":" in ui.host:
            self.address_family = socket.AF_INET6
        super().__init__((ui.host.strip("[]"), ui.port), Handler, **bounds)

    @property
    def url(self) -> str:
        """Where the page is, e.g. ``http://127.0.0.1:8090/``."""
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> UiServer:
        """Serve on a thread of its own (tests and the demo)."""
        threading.Thread(
            target=self.serve_forever, args=(POLL_S,), name="jobs-page", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self.shutdown()
        self.server_close()


def serve(ui: UiSettings, settings: JobsSettings, jobs: Jobs) -> int:
    """``main.py ui``: serve until SIGTERM (exit 0) or Ctrl-C (130)."""
    try:
        server = UiServer(ui, UiApi(jobs, settings, ui))
    except OSError as exc:
        raise ConfigError(f"WORKER_UI_PORT: cannot listen on {ui.host}:{ui.port}: {exc}") from None
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"jobs page at {server.url}", flush=True)
    log.info("ui.started", url=server.url, token=server.guard.needs_login)
    with server:
        server.serve_forever(POLL_S)
    return 0


class Handler(BaseHTTPRequestHandler):
    """Routes, checks and writes one request."""

    server_version = "comfyui-worker"
    sys_version = ""

    @property
    def app(self) -> UiServer:
        """The server, with its API and guard."""
        return cast(UiServer, self.server)

    def do_GET(self) -> None:
        """Static files, reads and output files."""
        self._handle(GET_ROUTES)

    def do_POST(self) -> None:
        """Login and the writes: submit, retry, cancel."""
        self._handle(POST_ROUTES)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to the structured log at debug level, not to bare stderr."""
        log.debug("ui.request", line=format % args)

    # ------------------------------------------------------------------ dispatch

    def _handle(self, routes: list[tuple[re.Pattern[str], Route]]) -> None:
        path = urlsplit(self.path).path
        if not self.app.guard.host_ok(self.headers.get("Host")):
            return self.reply({"error": "bad-host", "message": "unexpected Host"}, 421)
        if path in FILES and self.command == "GET":
            return self._static(*FILES[path])
        for pattern, route in routes:
            match = pattern.fullmatch(path)
            if match:
                return self._route(route, match)
        self.reply({"error": "not-found", "message": f"no such page {path}"}, 404)

    def _route(self, route: Route, match: re.Match[str]) -> None:
        public = route in PUBLIC
        if self.command == "POST" and not self._write_allowed():
            return None
        if not public and not self.app.guard.authorized(self.headers):
            return self.reply({"error": "unauthorized", "message": "sign in first"}, 401)
        try:
            route(self, **match.groupdict())
        except Exception as exc:  # every failure becomes one JSON answer
            self._failed(exc)
        return None

    def _write_allowed(self) -> bool:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json" or not self.app.guard.same_origin(self.headers):
            self.reply({"error": "forbidden", "message": "JSON from this page only"}, 403)
            return False
        return True

    def _failed(self, exc: Exception) -> None:
        error = as_error(exc)
        if error.http_status >= 500:
            log.error("ui.failed", error=error.name, message=error.message, exc_info=exc)
        reply = {"error": error.name, "message": error.message}
        if isinstance(error.details.get("fields"), dict):  # the form marks those fields
            reply["fields"] = error.details["fields"]
        self.reply(reply, error.http_status)

    # ------------------------------------------------------------------ responses

    def body(self) -> object:
        """The request's JSON body (bounded)."""
        declared = self.headers.get("Content-Length") or "0"
        if not declared.isdigit():
            raise InvalidWorkflowError("Content-Length must be a number of bytes")
        length, limit = int(declared), self.app.api.max_body_bytes
        if length > limit:
            raise InvalidWorkflowError(
                f"the request is {length} bytes, over this page's {limit}: images may be "
                f"{self.app.api.image_limit()}"
            )
        raw = self.rfile.read(length) if length else b"{}"
        return jsonsafe.loads(raw, source="the request body")

    def reply(self, data: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
        """A JSON answer."""
        payload = json.dumps(data).encode()
        self.send_response(status)
        self._common("application/json", "no-store", PAGE_CSP)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _static(self, name: str, content_type: str) -> None:
        payload = (STATIC / name).read_bytes()
        self.send_response(200)
        self._common(content_type, "no-cache", PAGE_CSP)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def stream(self, media_type: str, filename: str, chunks: Any) -> None:
        """An output file: inline only if it is a plain image, video or audio."""
        inline = INLINE.match(media_type) is not None
        self.send_response(200)
        self._common(media_type if inline else "application/octet-stream", "private", FILE_CSP)
        disposition = "inline" if inline else "attachment"
        self.send_header(
            "Content-Disposition", f"{disposition}; filename*=UTF-8''{quote(filename)}"
        )
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
        except (ComfyWorkerError, OSError) as exc:  # headers are out: all we can do is stop
            log.warning("ui.output_cut", error=str(exc))

    def _common(self, content_type: str, cache: str, csp: str) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", cache)
        self.send_header("Content-Security-Policy", csp)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
