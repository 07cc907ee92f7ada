"""Human progress on stderr for ``main.py run``: node n/m, sampler steps, a bar on a TTY."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from comfyui_worker.comfy.events import TERMINAL

BAR_WIDTH = 24


class Progress:
    """Turns ComfyUI's WebSocket events into short progress lines."""

    def __init__(self, graph: dict[str, Any], stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.class_types = {nid: str(node.get("class_type", "?")) for nid, node in graph.items()}
        self.total = len(graph)
        self.done: set[str] = set()
        self._bar_open = False

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        """Receive one event for the prompt being waited on."""
        if kind == "execution_cached":
            self.done.update(str(n) for n in data.get("nodes", []))
            if data.get("nodes"):
                self._line(f"{len(data['nodes'])} of {self.total} nodes cached")
        elif kind == "executing" and data.get("node") is not None:
            node = str(data["node"])
            self.done.add(node)
            self._line(
                f"node {len(self.done)}/{self.total}: {node} ({self.class_types.get(node, '?')})"
            )
        elif kind == "progress":
            self._step(int(data.get("value", 0)), int(data.get("max", 0) or 1))
        elif kind in TERMINAL:
            self._line(kind.replace("_", " "))

    def _step(self, value: int, maximum: int) -> None:
        if self.tty:
            filled = BAR_WIDTH * value // maximum
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stream.write(f"\r  [{bar}] step {value}/{maximum}")
            self.stream.flush()
            self._bar_open = True
        elif value == maximum or value == 1 or value * 4 // maximum != (value - 1) * 4 // maximum:
            self._line(f"  step {value}/{maximum}")

    def _line(self, text: str) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
        self.stream.write(text + "\n")
        self.stream.flush()
