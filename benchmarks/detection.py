"""Item 2: from ComfyUI finishing a prompt to the worker knowing it finished.

Three waiters, interleaved sample by sample so they see the same conditions:

* ``ours``: ``waiting.Waiter`` (WebSocket wake-up, then /history as truth),
  the moment being ``Finished.detected_at``;
* ``baseline_poll``: a plain client that GETs /history every poll interval (2 s, the
  COMFYUI_POLL_INTERVAL_SEC default) from the moment it submitted;
* ``websocket_only``: return on ``execution_success`` for the prompt, no /history.

Each prompt executes ~100 ms with jitter (FakeSleep on the fake).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from benchmarks.common import settings_for, summary_ms
from benchmarks.target import Target
from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.comfy.events import EventStream
from comfyui_worker.comfy.waiting import Waiter as PromptWaiter
from comfyui_worker.comfy.waiting import WaitPolicy

EXEC_S = 0.100
JITTER_S = 0.030
TIMEOUT_S = 60.0
METHODS = ("ours", "websocket_only", "baseline_poll")

Waiter = Callable[[dict[str, Any], str], float]  # (graph, prompt_id) -> detected monotonic


def measure(
    target: Target, work_dir: Path, samples: int, baseline_samples: int, seed: int = 7
) -> dict[str, Any]:
    """``samples`` detections each for ours and WebSocket-only, ``baseline_samples`` polling."""
    settings = settings_for(target.base_url, work_dir / "detection")
    poll_s = settings.poll_interval_s
    rng = random.Random(seed)
    found: dict[str, list[tuple[str, float]]] = {m: [] for m in METHODS}
    with (
        ComfyClient(settings) as client,
        _Ours(settings) as ours,
        _WebSocketOnly(target.base_url) as ws_only,
        httpx.Client(base_url=target.base_url, timeout=30) as plain,
    ):
        waiters: dict[str, Waiter] = {
            "ours": ours.wait,
            "websocket_only": ws_only.wait,
            "baseline_poll": lambda graph, pid: _poll(plain, graph, pid, poll_s),
        }
        for method in METHODS:  # warm-up: connections, first-request costs
            waiters[method](target.graph("bench/detect", 0.01), str(uuid.uuid4()))
        for i in range(samples):
            for method in METHODS:
                if method == "baseline_poll" and i >= baseline_samples:
                    continue
                exec_s = EXEC_S + rng.uniform(-JITTER_S, JITTER_S)
                pid = str(uuid.uuid4())
                detected = waiters[method](target.graph("bench/detect", exec_s), pid)
                found[method].append((pid, detected))
        spans = target.times(client, [pid for rows in found.values() for pid, _ in rows])
    result: dict[str, Any] = {
        "poll_interval_s": poll_s,
        "execution_s": summary_ms(
            [spans[pid].finished - spans[pid].started for pid, _ in found["ours"]]
        ),
    }
    for method, rows in found.items():
        result[method] = summary_ms([detected - spans[pid].finished for pid, detected in rows])
    base, mine = result["baseline_poll"], result["ours"]
    result["ratio_baseline_to_ours_p50"] = base["p50_ms"] / max(mine["p50_ms"], 1e-3)
    result["ratio_baseline_to_ours_p95"] = base["p95_ms"] / max(mine["p95_ms"], 1e-3)
    return result


class _Ours:
    """The worker's own waiter on a long-lived EventStream, as Runner uses it."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.client = ComfyClient(settings)
        self.events = EventStream(settings).start()

    def __enter__(self) -> _Ours:
        if not self.events.wait_connected(10):
            raise RuntimeError("the worker's WebSocket did not connect")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.events.close()
        self.client.close()

    def wait(self, graph: dict[str, Any], prompt_id: str) -> float:
        policy = WaitPolicy(TIMEOUT_S, self.settings.poll_interval_s, threading.Event())
        with self.events.watch(prompt_id) as watch:
            self.client.submit_once(graph, prompt_id=prompt_id, client_id=self.events.client_id)
            finished = PromptWaiter(self.client, watch, policy).run()
        return finished.detected_at


class _WebSocketOnly:
    """A client that trusts the socket alone: done on ``execution_success``."""

    def __init__(self, base_url: str) -> None:
        self.client_id = f"bench-ws-{uuid.uuid4().hex[:8]}"
        scheme, rest = base_url.split("://", 1)
        ws_scheme = "wss" if scheme == "https" else "ws"
        self._socket: ClientConnection = connect(
            f"{ws_scheme}://{rest}/ws?clientId={self.client_id}", max_size=None, proxy=None
        )
        self._http = httpx.Client(base_url=base_url, timeout=30)

    def __enter__(self) -> _WebSocketOnly:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._socket.close()
        self._http.close()

    def wait(self, graph: dict[str, Any], prompt_id: str) -> float:
        body = {"prompt": graph, "prompt_id": prompt_id, "client_id": self.client_id}
        self._http.post("/prompt", json=body).raise_for_status()
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            raw = self._socket.recv(timeout=max(deadline - time.monotonic(), 0.001))
            if not isinstance(raw, str):
                continue
            message = json.loads(raw)
            kind, data = message.get("type"), message.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if kind == "execution_success":
                return time.monotonic()
            if kind in ("execution_error", "execution_interrupted"):
                raise RuntimeError(f"prompt {prompt_id} failed: {message}")


def _poll(http: httpx.Client, graph: dict[str, Any], prompt_id: str, interval_s: float) -> float:
    """The naive client: POST, then GET /history/{id} every ``interval_s`` until it is there."""
    body = {"prompt": graph, "prompt_id": prompt_id, "client_id": "bench-poller"}
    http.post("/prompt", json=body).raise_for_status()
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if prompt_id in http.get(f"/history/{prompt_id}").json():
            return time.monotonic()
        time.sleep(interval_s)
    raise TimeoutError(f"prompt {prompt_id} not in /history after {TIMEOUT_S} s")
