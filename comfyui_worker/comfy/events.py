"""ComfyUI's WebSocket (/ws?clientId=) as wake-ups for waiters.

The socket is only a doorbell: it says "look now" within a millisecond of ComfyUI
finishing, and ``/history`` stays the source of truth. When the socket is down the
waiter's poll ticks still find every completion, and a background thread keeps
reconnecting with backoff.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from comfyui_worker.settings import ComfySettings

log = structlog.get_logger("comfyui_worker.comfy.events")

TERMINAL = frozenset({"execution_success", "execution_error", "execution_interrupted"})
STARTED = frozenset({"execution_start", "execution_cached", "executing", "executed"})
ProgressCallback = Callable[[str, dict[str, Any]], None]


class Watch:
    """One waiter's interest in one prompt: a wake-up flag plus a progress callback.

    ``own``: we just submitted the prompt with this socket's client id, after the watch
    was registered, so its own terminal event will arrive; queue changes (other
    prompts) need not wake it. An adopted prompt reports to its submitter's socket,
    so for it a queue change is the only sign it may have finished.
    """

    def __init__(
        self,
        prompt_id: str,
        on_event: ProgressCallback | None,
        connected: Callable[[], bool] = lambda: False,
        *,
        own: bool = False,
        announces_filing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.prompt_id = prompt_id
        self.own = own
        self.on_event = on_event
        self.connected = connected
        self.announces_filing = announces_filing  # the server says when /history has a prompt
        self._terminal = threading.Event()
        self._filed = threading.Event()
        self._started = threading.Event()
        self._wake = threading.Event()

    @property
    def started(self) -> bool:
        """Whether the socket said ComfyUI started executing this prompt."""
        return self._started.is_set()

    @property
    def terminal_seen(self) -> bool:
        """Whether the socket said the prompt ended (success, error or interrupt)."""
        return self._terminal.is_set()

    def wait_terminal(self, timeout_s: float) -> bool:
        """Sleep until the socket says the prompt ended, or the timeout passes."""
        return self._terminal.wait(timeout_s)

    def wait_filed(self, timeout_s: float) -> bool:
        """Sleep until the socket says the prompt is in /history, or the timeout passes.

        ComfyUI sends the terminal event, then files the entry in /history, then sends
        ``executing`` with no node to the prompt's client: asking before that is wasted.
        """
        return self._filed.wait(timeout_s)

    def wake(self) -> None:
        """Make the waiter look at /history now."""
        self._wake.set()

    def queue_changed(self) -> None:
        """Another prompt was queued, started or finished: look, unless the events are ours."""
        if not self.own:
            self.wake()

    def wait(self, timeout_s: float) -> bool:
        """Sleep until woken or the timeout passes; True if woken."""
        woken = self._wake.wait(max(timeout_s, 0.0))
        self._wake.clear()
        return woken

    def deliver(self, kind: str, data: dict[str, Any]) -> None:
        """Route one event for this prompt: progress to the callback, terminal to a wake."""
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:  # a progress display must never break waiting
                log.warning("comfy.progress_callback_failed", exc_info=True)
        if kind in STARTED:
            self._started.set()
        filed = kind == "executing" and data.get("node") is None
        if filed:
            self._filed.set()
        if kind in TERMINAL or filed:
            self._terminal.set()
            self.wake()


class EventStream:
    """A long-lived, self-reconnecting WebSocket shared by every waiter of a worker."""

    def __init__(self, settings: ComfySettings, client_id: str | None = None) -> None:
        self.client_id = client_id or f"comfyui-worker-{uuid.uuid4().hex[:12]}"
        self._url = _ws_url(settings.base_url_str, self.client_id)
        self._headers = _ws_headers(settings)
        self._open_timeout_s = settings.http_timeout_s
        self._max_backoff_s = settings.poll_interval_s
        self._watches: dict[str, list[Watch]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._socket: ClientConnection | None = None
        self._thread: threading.Thread | None = None
        self.connects = 0
        self.on_reconnect: Callable[[], None] | None = None
        self.announces_filing = False  # seen ``executing`` with no node: /history is filed

    @property
    def connected(self) -> bool:
        """Whether the socket is open right now."""
        return self._connected.is_set()

    def start(self) -> EventStream:
        """Start the background reader (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="comfy-ws", daemon=True)
            self._thread.start()
        return self

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the socket is open (used so a submit is not missed), or give up."""
        return self._connected.wait(timeout_s)

    def close(self) -> None:
        """Stop reconnecting and close the socket."""
        self._stop.set()
        sock = self._socket
        if sock is not None:
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @contextmanager
    def watch(
        self, prompt_id: str, on_event: ProgressCallback | None = None, *, own: bool = False
    ) -> Iterator[Watch]:
        """Register interest in ``prompt_id`` for the duration of the block."""
        watch = Watch(
            prompt_id,
            on_event,
            lambda: self.connected,
            own=own,
            announces_filing=lambda: self.announces_filing,
        )
        with self._lock:
            self._watches.setdefault(prompt_id, []).append(watch)
        try:
            yield watch
        finally:
            with self._lock:
                remaining = [w for w in self._watches.get(prompt_id, []) if w is not watch]
                if remaining:
                    self._watches[prompt_id] = remaining
                else:
                    self._watches.pop(prompt_id, None)

    # --- background thread ---------------------------------------------------------

    def _run(self) -> None:
        backoff_s = 0.05
        while not self._stop.is_set():
            try:
                with connect(
                    self._url,
                    additional_headers=self._headers,
                    open_timeout=self._open_timeout_s,
                    max_size=None,
                    compression=None,
                    proxy=None,
                ) as sock:
                    self._on_open(sock)
                    backoff_s = 0.05
                    for message in sock:
                        if isinstance(message, str):
                            self._dispatch(message)
            except (OSError, WebSocketException, TimeoutError) as exc:
                log.debug("comfy.ws_unavailable", error=str(exc) or type(exc).__name__)
            finally:
                self._on_close()
            self._stop.wait(backoff_s)
            backoff_s = min(backoff_s * 2, self._max_backoff_s)

    def _on_open(self, sock: ClientConnection) -> None:
        self._socket = sock
        if self._stop.is_set():  # close() ran while we were connecting
            sock.close()

    def _on_registered(self) -> None:
        """ComfyUI's first ``status`` (with our sid) means events will reach us now.

        The handshake completes before ComfyUI files the socket under our client id,
        so "open" alone is too early to submit a prompt whose events we want.
        """
        if self._connected.is_set():
            return
        self._connected.set()
        self.connects += 1
        log.debug("comfy.ws_connected", client_id=self.client_id, connects=self.connects)
        if self.connects > 1 and self.on_reconnect is not None:
            self.on_reconnect()
        self.wake_all()  # events may have been missed while we were away

    def _on_close(self) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._socket = None
        if was_connected and not self._stop.is_set():
            log.info("comfy.ws_disconnected", client_id=self.client_id)
            self.wake_all()  # a drop may mean a restart: let waiters check the queue

    def _dispatch(self, raw: str) -> None:
        try:
            message = json.loads(raw)
            kind, data = str(message["type"]), message.get("data") or {}
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(data, dict):
            return
        if kind == "status":  # queue changed: a prompt was queued, started or finished
            if "sid" in data:
                self._on_registered()
            for watch in self._all_watches():
                watch.queue_changed()
            return
        prompt_id = data.get("prompt_id")
        if kind == "executing" and data.get("node") is None and prompt_id:
            self.announces_filing = True
        with self._lock:
            watches = list(self._watches.get(str(prompt_id), ()))
        for watch in watches:
            watch.deliver(kind, data)

    def wake_all(self) -> None:
        """Wake every waiter (socket state changed, or abort)."""
        for watch in self._all_watches():
            watch.wake()

    def _all_watches(self) -> list[Watch]:
        with self._lock:
            return [w for group in self._watches.values() for w in group]


def _ws_headers(settings: ComfySettings) -> dict[str, str]:
    """The HTTP headers, plus Basic auth from the URL's credentials (never put in the URL)."""
    headers = settings.request_headers()
    credentials = settings.basic_auth()
    if credentials is not None and "Authorization" not in headers:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


def _ws_url(base_url: str, client_id: str) -> str:
    scheme, rest = base_url.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws?clientId={client_id}"
