"""Prometheus metrics: outcomes, phase durations, bytes, ComfyUI reachability, models.

HTTP retries are counted by stamina itself as ``stamina_retries_total`` (it
registers the counter when prometheus-client is installed), so there is no second
retry counter here. Outcome labels come from the errors' own ``name`` and
``business`` attributes.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from comfyui_worker.errors import ComfyUnavailableError, ComfyWorkerError
from comfyui_worker.models.ensure import Outcome
from comfyui_worker.result import RunResult

BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
PHASES = ("queued", "executing", "downloading", "total")
# LittleHorse round trips take milliseconds: buckets fine enough to read a p50 from.
RPC_BUCKETS_S = tuple(
    ms / 1000
    for ms in (
        0.5,
        1,
        1.5,
        2,
        3,
        4,
        5,
        6,
        8,
        10,
        12,
        15,
        20,
        25,
        30,
        40,
        50,
        75,
        100,
        250,
        500,
        1000,
        5000,
    )
)


class Metrics:
    """The worker's metrics, registered once per process (or per test registry)."""

    def __init__(self, registry: CollectorRegistry = DEFAULT_REGISTRY) -> None:
        self.tasks = Counter(
            "comfyui_worker_tasks",
            "Tasks finished, by outcome (success or the error name).",
            ["outcome", "kind"],
            registry=registry,
        )
        self.phase = Histogram(
            "comfyui_worker_task_phase_seconds",
            "Time per phase: queued in ComfyUI, executing, downloading, total.",
            ["phase"],
            buckets=BUCKETS_S,
            registry=registry,
        )
        self.downloaded = Counter(
            "comfyui_worker_downloaded_bytes", "Bytes of outputs saved.", registry=registry
        )
        self.comfy_up = Gauge(
            "comfyui_worker_comfyui_up",
            "1 if ComfyUI answered the last request or probe, else 0.",
            registry=registry,
        )
        self.littlehorse_call = Histogram(
            "comfyui_worker_littlehorse_call_seconds",
            "LittleHorse round trips per task: claim (a poll request until its task "
            "arrives), checkpoint (PutCheckpoint before the POST), report (ReportTask).",
            ["call"],
            buckets=RPC_BUCKETS_S,
            registry=registry,
        )
        self.running_age = Gauge(
            "comfyui_worker_running_task_age_seconds",
            "Age of the oldest task being executed (0 when idle).",
            registry=registry,
        )

        self.model_downloads = Counter(
            "comfyui_worker_model_downloads", "Declared models downloaded.", registry=registry
        )
        self.model_bytes = Counter(
            "comfyui_worker_model_downloaded_bytes",
            "Bytes of declared models downloaded.",
            registry=registry,
        )
        self.model_hits = Counter(
            "comfyui_worker_model_cache_hits",
            "Declared models ComfyUI already had (no download).",
            registry=registry,
        )

    def model_outcome(self, outcome: Outcome) -> None:
        """Count one declared model: a cache hit, or a download and its bytes."""
        if outcome.downloaded is None:
            self.model_hits.inc()
            return
        self.model_downloads.inc()
        self.model_bytes.inc(outcome.downloaded.size_bytes - outcome.downloaded.resumed_from)

    def track_running(self, age_s: Callable[[], float]) -> None:
        """Report the running task's age from a callable (read at scrape time)."""
        self.running_age.set_function(age_s)

    def littlehorse_round_trip(self, call: str, seconds: float) -> None:
        """Record one LittleHorse round trip (``Ledger.on_call``)."""
        self.littlehorse_call.labels(call).observe(seconds)

    def succeeded(self, result: RunResult) -> None:
        """Record a successful task's phases and bytes."""
        self.tasks.labels("success", "success").inc()
        timings = result.timings_ms.model_dump()
        for phase in PHASES:
            self.phase.labels(phase).observe(timings[phase] / 1000)
        self.downloaded.inc(sum(o.size_bytes for o in result.outputs if not o.reused))
        self.comfy_up.set(1)

    def failed(self, error: ComfyWorkerError) -> None:
        """Record a failed task by its error name and kind."""
        self.tasks.labels(error.name, "business" if error.business else "technical").inc()
        if isinstance(error, ComfyUnavailableError):
            self.comfy_up.set(0)
