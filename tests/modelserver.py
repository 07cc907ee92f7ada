"""A real HTTP file server on 127.0.0.1 for model downloads: ranges, drips, cuts, 404s.

Serves the files of a directory (``/name``) with ``Range: bytes=N-`` support. Test
controls: ``cut_after`` (the next responses of a path stop after N body bytes, the
connection closed), ``hold_after`` (a path's body pauses after N bytes until
``release``), ``drip_s`` (a slow drip), ``no_ranges`` (answer 200 whole), ``unsized`` (no Content-Length), ``redirects`` (a 302 to a URL). ``requests`` records (path, Range,
Authorization) of every request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BLOCK = 256 * 1024


class ModelServer:
    """``with ModelServer(dir) as server: server.url("x.safetensors")``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None, str | None]] = []
        self.cut_after: dict[str, list[int]] = {}
        self.hold_after: dict[str, int] = {}
        self.released = threading.Event()
        self.no_ranges = False
        self.unsized: set[str] = set()  # paths answered without Content-Length (until close)
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        self.drip_s: dict[str, float] = {}  # path -> pause between 4 KiB blocks (a slow drip)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    def url(self, name: str) -> str:
        """The http URL of a file."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def add(self, name: str, data: bytes) -> str:
        """Write a file to serve; returns its sha256."""
        (self.root / name).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def gets(self, name: str) -> int:
        """How many GETs asked for a file."""
        return sum(1 for path, _, _ in self.requests if path == f"/{name}")

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        self.requests.append(
            (path, handler.headers.get("Range"), handler.headers.get("Authorization"))
        )
        if path in self.redirects:
            handler.send_response(302)
            handler.send_header("Location", self.redirects[path])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        file = self.root / path.lstrip("/")
        if path.count("/") != 1 or not file.is_file():
            handler.send_error(404)
            return
        size = file.stat().st_size
        start = 0
        wanted = handler.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and not self.no_ranges:
            start = int(wanted[6:].split("-")[0])
            if start >= size:
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{size}")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            handler.send_response(200)
        if path not in self.unsized:
            handler.send_header("Content-Length", str(size - start))
        handler.end_headers()
        cuts = self.cut_after.get(path, [])
        limit = cuts.pop(0) if cuts else None
        hold = self.hold_after.get(path)
        drip = self.drip_s.get(path)
        sent = 0
        try:
            for block in _blocks(file, start, 4096 if drip else BLOCK):
                if drip:
                    time.sleep(drip)  # the server's pace, not the test's
                if limit is not None and sent + len(block) > limit:
                    handler.wfile.write(block[: limit - sent])
                    handler.wfile.flush()
                    handler.close_connection = True
                    return
                if hold is not None and start + sent >= hold:
                    self.released.wait()
                    hold = None
                handler.wfile.write(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            return


def _blocks(file: Path, start: int, size: int) -> Iterator[bytes]:
    with open(file, "rb") as handle:
        handle.seek(start)
        while block := handle.read(size):
            yield block
