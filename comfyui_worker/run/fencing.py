"""Exactly-once GPU work across a fleet: submissions recorded as LittleHorse checkpoints.

Before a worker queues a prompt it records the submission (which ComfyUI, which prompt
id, which worker) as a checkpoint of the task's TaskRun. LittleHorse answers a
checkpoint from an attempt that is no longer the current, running one (it timed out
while parked, or a newer attempt exists) with STOP_TASK: a fencing token. Such an
attempt submits nothing. A retry reads the earlier submissions and adopts the prompt
where it runs, on whichever ComfyUI it can reach, so a graph runs once in the fleet. The
record carries the graph's fingerprint: a prompt is adopted only if ComfyUI holds that
very graph under its id.

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
            )
        except (KeyError, TypeError, ValueError):
            return None


class Fence(Protocol):
    """What the execution loop needs from LittleHorse to submit exactly once."""

    @property
    def earlier(self) -> list[Submission]:
        """Submissions earlier attempts (or deliveries) of this task recorded, oldest first."""
        ...

    def record(self, comfyui_url: str, prompt_id: str, graph_sha256: str) -> None:
        """Record a submission before making it; raises ``AttemptFencedError`` if stale."""
        ...


class NoFence:
    """No LittleHorse (``main.py run``): nothing recorded, nothing to fence."""

    @property
    def earlier(self) -> list[Submission]:
        """Nothing was recorded."""
        return []

    def record(self, comfyui_url: str, prompt_id: str, graph_sha256: str) -> None:
        """Nothing to record."""


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
