"""Exactly-once GPU work across a fleet: submissions recorded as LittleHorse checkpoints.

Before a worker queues a prompt it records the submission (which ComfyUI, which prompt
id, which worker) as a checkpoint of the task's TaskRun. LittleHorse answers a
checkpoint from an attempt that is no longer the current, running one (it timed out
while parked, or a newer attempt exists) with STOP_TASK: a fencing token. Such an
attempt submits nothing. A retry reads the earlier submissions and adopts the prompt
where it runs, on whichever ComfyUI it can reach, so a graph runs once in the fleet. The
record carries the graph's fingerprint: a prompt is adopted only if ComfyUI holds that
very graph under its id.

With prefetch a prompt may be queued behind others of the same worker; its record says
so (``queued_behind``), and when ComfyUI starts it the worker adds a small ``Started``
record, so the job side counts it as running from then, not from its submission.

The LittleHorse side (``ctx.execute_and_checkpoint``) lives at the worker boundary;
this module knows only the record and the interface the execution loop calls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Submission:
    """One prompt queued on one ComfyUI, as recorded before the POST."""

    comfyui_url: str  # the advertised address, never with credentials
    prompt_id: str
    worker_id: str
    attempt: int
    graph_sha256: str | None = None  # what was submitted (None: a record without one)
    queued_behind: int = 0  # the worker's own prompts ahead of it in ComfyUI (prefetch)

    @property
    def prefetched(self) -> bool:
        """Whether the prompt was queued to wait behind another of the worker's own."""
        return self.queued_behind > 0

    def to_json(self) -> dict[str, Any]:
        """The checkpoint value."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: object) -> Submission | None:
        """Read a checkpoint value back; anything not shaped like a submission is ignored."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                comfyui_url=str(value["comfyui_url"]),
                prompt_id=str(value["prompt_id"]),
                worker_id=str(value.get("worker_id", "")),
                attempt=int(value.get("attempt", -1)),
                graph_sha256=_text_or_none(value.get("graph_sha256")),
                queued_behind=int(value.get("queued_behind", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Started:
    """ComfyUI started executing a prefetched prompt: recorded after its ``Submission``.

    Not a submission (no ``comfyui_url``), so adoption never reads it as one; the job
    side reads ``record``/``attempt`` (``jobs/read.py``) to count the run from here.
    """

    prompt_id: str
    attempt: int
    record: str = "started"

    def to_json(self) -> dict[str, Any]:
        """The checkpoint value."""
        return asdict(self)


class Fence(Protocol):
    """What the execution loop needs from LittleHorse to submit exactly once."""

    @property
    def earlier(self) -> list[Submission]:
        """Submissions earlier attempts (or deliveries) of this task recorded, oldest first."""
        ...

    def record(
        self, comfyui_url: str, prompt_id: str, graph_sha256: str, queued_behind: int = 0
    ) -> None:
        """Record a submission before making it; raises ``AttemptFencedError`` if stale."""
        ...

    def started(self, prompt_id: str) -> None:
        """ComfyUI started a prompt this attempt queued: record it if it was prefetched.

        Called from the WebSocket thread; never blocks and never raises.
        """
        ...


class NoFence:
    """No LittleHorse (``main.py run``): nothing recorded, nothing to fence."""

    @property
    def earlier(self) -> list[Submission]:
        """Nothing was recorded."""
        return []

    def record(
        self, comfyui_url: str, prompt_id: str, graph_sha256: str, queued_behind: int = 0
    ) -> None:
        """Nothing to record."""

    def started(self, prompt_id: str) -> None:
        """Nothing to record."""


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
