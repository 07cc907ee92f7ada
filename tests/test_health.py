"""Health endpoints and metrics, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from comfyui_worker.health import HealthServer
from comfyui_worker.metrics import Metrics


class Switch:
    def __init__(self) -> None:
        self.up = True

    def __call__(self) -> None:
        if not self.up:
            raise ConnectionError("refused")


@pytest.fixture
def comfy_switch() -> Switch:
    return Switch()


@pytest.fixture
def server(comfy_switch: Switch) -> Iterator[HealthServer]:
    srv = HealthServer(
        "127.0.0.1",
        0,
        alive=lambda: None,
        ready_probes={"comfyui": comfy_switch, "littlehorse": lambda: None},
    ).start()
    yield srv
    srv.stop()


def test_healthz_is_ok_while_alive(server: HealthServer):
    """/healthz answers 200 when the SDK reports healthy."""
    response = httpx.get(f"http://127.0.0.1:{server.port}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_names_the_part_that_is_down(comfy_switch: Switch):
    """/readyz is 503 with a body that says ComfyUI is down and LittleHorse is fine."""
    comfy_switch.up = False
    srv = HealthServer(
        "127.0.0.1",
        0,
        alive=lambda: None,
        ready_probes={"comfyui": comfy_switch, "littlehorse": lambda: None},
    ).start()
    try:
        response = httpx.get(f"http://127.0.0.1:{srv.port}/readyz")
    finally:
        srv.stop()
    assert response.status_code == 503
    assert response.json()["littlehorse"] == "ok"
    assert response.json()["comfyui"].startswith("ConnectionError")


def test_unhealthy_sdk_fails_liveness():
    """A failed heartbeat (as the SDK reports it) makes /healthz 503."""
    srv = HealthServer(
        "127.0.0.1", 0, alive=lambda: "LittleHorse worker UNHEALTHY", ready_probes={}
    ).start()
    try:
        response = httpx.get(f"http://127.0.0.1:{srv.port}/healthz")
    finally:
        srv.stop()
    assert response.status_code == 503 and "UNHEALTHY" in response.json()["status"]


def test_metrics_endpoint_serves_prometheus_text(server: HealthServer):
    """/metrics serves the text exposition format."""
    response = httpx.get(f"http://127.0.0.1:{server.port}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")


def test_metrics_record_outcomes_phases_and_bytes():
    """A success feeds phases and bytes; failures count by name and kind."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    result = {
        "timings_ms": {"queued": 5, "executing": 1000, "downloading": 20, "total": 1030},
        "outputs": [{"size_bytes": 100, "reused": False}, {"size_bytes": 50, "reused": True}],
    }
    metrics.succeeded(result)
    metrics.failed("invalid-workflow", business=True)
    metrics.failed("comfyui-unavailable", business=False)
    text = generate_latest(registry).decode()
    assert 'comfyui_worker_tasks_total{kind="success",outcome="success"} 1.0' in text
    assert 'comfyui_worker_tasks_total{kind="business",outcome="invalid-workflow"} 1.0' in text
    assert 'comfyui_worker_task_phase_seconds_count{phase="executing"} 1.0' in text
    assert "comfyui_worker_downloaded_bytes_total 100.0" in text
    assert "comfyui_worker_comfyui_up 0.0" in text
