"""Readiness, the poll gate, health endpoints and metrics, over real HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from comfyui_worker.errors import ComfyUnavailableError, InvalidWorkflowError
from comfyui_worker.models.ensure import Outcome
from comfyui_worker.models.files import Downloaded
from comfyui_worker.worker.health import HealthServer, Readiness
from comfyui_worker.worker.metrics import Metrics
from tests.test_result import result


class Switch:
    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if not self.up:
            raise ConnectionError("refused")


@pytest.fixture
def comfy_switch() -> Switch:
    return Switch()


def readiness(comfy_switch: Switch) -> Readiness:
    ready = Readiness()
    ready.add("comfyui", comfy_switch, gating=True, cached=False)
    ready.add_problem("littlehorse", lambda: None, gating=False)
    return ready


@pytest.fixture
def server(comfy_switch: Switch) -> Iterator[HealthServer]:
    srv = HealthServer("127.0.0.1", 0, alive=lambda: None, readiness=readiness(comfy_switch))
    srv.start()
    yield srv
    srv.stop()


def test_healthz_is_ok_while_alive(server: HealthServer):
    """/healthz answers 200 while no claimed task is stuck."""
    response = httpx.get(f"http://127.0.0.1:{server.port}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_names_the_part_that_is_down(server: HealthServer, comfy_switch: Switch):
    """/readyz is 503 with a body that says ComfyUI is down and LittleHorse is fine."""
    comfy_switch.up = False
    response = httpx.get(f"http://127.0.0.1:{server.port}/readyz")
    assert response.status_code == 503
    assert response.json() == {"comfyui": "refused", "littlehorse": "ok"}


def test_a_stuck_claim_fails_liveness():
    """A claimed task that never started (a leaked slot) makes /healthz 503."""
    stuck = "task t1 attempt 0 claimed 900s ago, not started"
    srv = HealthServer("127.0.0.1", 0, alive=lambda: stuck, readiness=Readiness()).start()
    try:
        response = httpx.get(f"http://127.0.0.1:{srv.port}/healthz")
    finally:
        srv.stop()
    assert response.status_code == 503 and response.json()["status"] == stuck


def test_cached_probes_ask_at_most_every_two_seconds(comfy_switch: Switch):
    """A busy scraper hits the cached verdict, not ComfyUI."""
    ready = Readiness()
    ready.add("comfyui", comfy_switch, gating=True, cached=True)
    for _ in range(20):
        assert ready.report() == {"comfyui": None}
    assert comfy_switch.calls == 1


def test_a_named_problem_is_read_afresh_and_cut_short():
    """State that names its own problem is down while it does, never cached, cut to 300 chars."""
    problem: list[str | None] = ["x" * 1000]
    ready = Readiness()
    ready.add_problem("warmup", lambda: problem[0], gating=True)
    assert ready.gate_problem() == "warmup: " + "x" * 300
    problem[0] = None
    assert ready.report() == {"warmup": None} and ready.gate_problem() is None


def test_the_gate_holds_until_every_gating_probe_passes(comfy_switch: Switch):
    """No PollTask request leaves while ComfyUI is down; it leaves once ComfyUI is back."""
    comfy_switch.up = False
    ready = readiness(comfy_switch)
    opened = threading.Event()

    async def wait_gate() -> None:
        await ready.gate()
        opened.set()

    thread = threading.Thread(target=asyncio.run, args=(wait_gate(),))
    thread.start()
    try:
        assert not opened.wait(0.3)  # still closed while the probe fails
        comfy_switch.up = True
        assert opened.wait(5)
    finally:
        comfy_switch.up = True
        thread.join(5)


def test_metrics_endpoint_serves_prometheus_text(server: HealthServer):
    """/metrics serves the text exposition format."""
    response = httpx.get(f"http://127.0.0.1:{server.port}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")


def test_metrics_record_outcomes_phases_and_bytes():
    """A success feeds phases and bytes; failures count by their own name and kind."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.succeeded(result())
    metrics.failed(InvalidWorkflowError("bad"))
    metrics.failed(ComfyUnavailableError("down", maybe_delivered=False))
    text = generate_latest(registry).decode()
    assert 'comfyui_worker_tasks_total{kind="success",outcome="success"} 1.0' in text
    assert 'comfyui_worker_tasks_total{kind="business",outcome="invalid-workflow"} 1.0' in text
    assert 'comfyui_worker_tasks_total{kind="technical",outcome="comfyui-unavailable"} 1.0' in text
    assert 'comfyui_worker_task_phase_seconds_count{phase="executing"} 1.0' in text
    assert "comfyui_worker_downloaded_bytes_total 1.0" in text
    assert "comfyui_worker_comfyui_up 0.0" in text


def test_metrics_count_model_downloads_bytes_and_cache_hits():
    """A present model is a cache hit; a download counts once with the bytes it fetched."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.model_outcome(Outcome("checkpoints/a.safetensors"))
    metrics.model_outcome(Outcome("vae/v.pt", Downloaded(1000, 0.5, resumed_from=400)))
    text = generate_latest(registry).decode()
    assert "comfyui_worker_model_cache_hits_total 1.0" in text
    assert "comfyui_worker_model_downloads_total 1.0" in text
    assert "comfyui_worker_model_downloaded_bytes_total 600.0" in text


def test_a_failure_makes_cached_probes_look_again():
    """invalidate(): a cached "ok" is not trusted after a task failed on the environment."""
    store = Switch()
    ready = Readiness()
    ready.add("output", store, gating=True, cached=True)
    assert ready.gate_problem() is None
    store.up = False
    assert ready.gate_problem() is None  # still the cached verdict
    ready.invalidate()
    assert ready.gate_problem() == "output: refused"


def test_wait_ready_returns_once_up_or_the_problem_at_the_deadline():
    """A claimed task waits for readiness; it gives up with the problem, or when told to."""
    store = Switch()
    store.up = False
    ready = Readiness()
    ready.add("output", store, gating=True, cached=False)
    assert asyncio.run(ready.wait_ready(0.0)) == "output: refused"
    assert asyncio.run(ready.wait_ready(60.0, give_up=lambda: True)) == "output: refused"

    async def comes_back() -> str | None:
        waiting = asyncio.create_task(ready.wait_ready(60.0))
        while store.calls < 4:  # it is polling
            await asyncio.sleep(0.01)
        store.up = True
        return await waiting

    assert asyncio.run(comes_back()) is None
