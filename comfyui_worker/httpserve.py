"""A threading HTTP server that a slow or hostile client cannot exhaust.

The standard library's ``ThreadingHTTPServer`` starts a thread per connection and
waits forever for a request's headers, so a few thousand half-sent requests hold a
few thousand threads. Here every connection has a socket timeout (headers and body
must arrive within it) and at most ``max_connections`` are served at once; past
that, a connection is answered 503 at once, without a thread. The jobs page and the
health endpoint both serve through it.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

log = structlog.get_logger("comfyui_worker.httpserve")

REQUEST_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 58\r\n\r\n"
    b'{"error": "busy", "message": "too many open connections"}\n'
)


class BoundedHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a per-connection timeout and a cap on connections."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.request_timeout_s = request_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve on a thread of its own if a slot is free, else answer 503 here and close."""
        if not self._slots.acquire(blocking=False):
            log.warning("http.too_many_connections", client=str(client_address[0]))
            self._refuse(request)
            return
        request.settimeout(self.request_timeout_s)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started: give the slot back here
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is routine: a debug line, not a traceback."""
        log.debug("http.connection_failed", client=str(client_address[0]), exc_info=True)

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.settimeout(0.5)
            request.sendall(BUSY)
        except OSError:
            pass
        self.shutdown_request(request)
