"""ComfyUI's /history entry, read once into a typed value.

An entry is ``{"prompt": [number, id, graph, extra, outputs], "outputs": {...},
"status": {"status_str": ..., "messages": [[kind, data], ...]}}``; old servers send
no ``status`` (a success). Anything malformed reads as absent, never as a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HistoryEntry:
    """A finished prompt as /history tells it."""

    graph: object | None = None  # the graph that ran (ComfyUI's copy)
    outputs: object = None  # node id -> outputs, read by ``outputs.collect``
    status: str = "success"
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> data

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> HistoryEntry:
        """The entry from its JSON object."""
        prompt = raw.get("prompt")
        status = raw.get("status")
        status = status if isinstance(status, dict) else {}
        return cls(
            graph=prompt[2] if isinstance(prompt, list) and len(prompt) > 2 else None,
            outputs=raw.get("outputs"),
            status=str(status.get("status_str", "success")),
            messages=_messages(status.get("messages")),
        )

    @property
    def succeeded(self) -> bool:
        """Whether the prompt ran to its end."""
        return self.status == "success"

    def timestamps_ms(self) -> dict[str, float]:
        """``{message kind: timestamp ms}`` for the messages that carry a number."""
        return {
            kind: float(stamp)
            for kind, data in self.messages.items()
            if isinstance(stamp := data.get("timestamp"), int | float)
            and not isinstance(stamp, bool)
        }


def _messages(raw: object) -> dict[str, dict[str, Any]]:
    """``status.messages`` as {kind: data}, skipping anything malformed."""
    found: dict[str, dict[str, Any]] = {}
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
            found[str(item[0])] = item[1]
    return found
