"""What the queue, the simulation and the nodes need of the fake server (``app.FakeComfyUI``).

A protocol, so those modules never import the app that builds them.
"""

from __future__ import annotations

from typing import Protocol

from fakes.comfyui.files import Files
from fakes.comfyui.hub import Hub


class Host(Protocol):
    """The fake server's shared state and records, as the engine updates them."""

    files: Files
    hub: Hub
    newer: bool
    execution_time_s: float
    history_delay_s: float
    submitted: list[str]
    executed: list[str]
    cached_runs: list[str]
    interrupted: list[str]
    deleted: list[str]
    received_times: dict[str, float]
    started_times: dict[str, float]
    finish_times: dict[str, float]
    node_times: dict[str, dict[str, tuple[float, float]]]

    def installed(self, folder: str) -> list[str]:
        """The files of a model folder, as ComfyUI would list them."""
        ...

    def node_failure(self, class_type: str) -> tuple[str, str] | None:
        """The failure injected for nodes of this class, if any."""
        ...
